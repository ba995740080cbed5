"""The rule for every file twinrun writes: replace only a twinrun artefact of the same kind.

``twinrun run -o v.py v.py`` must not destroy ``v.py``; ``check --keep-traces D`` must not overwrite a
user's ``D/run-1.trace``; ``env -o s.py`` must not turn a script into JSON; no output may land on
the ``--against`` reference. Before writing, a command calls :func:`check_target` (or one of the
writers below, which call it): the path may be missing, an empty regular file, or a regular file
that *by its content* is a twinrun artefact of the same :class:`Kind`; anything else, a folder, a
FIFO, a device, a symbolic link, or one of the ``protected`` paths (the reference, the script) is
refused with one :class:`UsageError` line naming it and the fix.

Writing:

- :func:`atomic_write` / :func:`write_text`: into a temporary name in the same folder, renamed over
  the target at the end, so a crash leaves the old file or the new one, never half of one (env
  JSON fingerprints, any file written at once).
- :func:`replace_in_place`: for a format that must be written where it will stay (a trace commits
  each step in place so that a killed run leaves a readable trace): checks, then removes the old
  artefact and its SQLite ``-wal``/``-shm``/``-journal`` (only when they are SQLite's), so a stale
  log is never replayed into the new file.
- :func:`install_new`: publish a file built at a temporary name only if the target still does not
  exist (a hard link cannot overwrite), so two processes creating one file race safely: one wins,
  the other sees the winner's file (two sweeps started at once on a new results file).
- :func:`writer_lock`: an advisory lock held while a process writes a file, so a second writer is
  refused with a message instead of interleaving (two sweeps on one results file).

>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> notes = os.path.join(folder, "notes.txt")
>>> _ = open(notes, "w").write("my notes")
>>> check_target(notes, Kind.TRACE)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
twinrun._errors.UsageError: -o .../notes.txt exists and is not a twinrun trace: writing there would destroy it; ...
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from ._errors import TwinrunError, UsageError

__all__ = [
    "FREEZE_MARKER",
    "REPORT_MARKER",
    "Kind",
    "atomic_write",
    "check_target",
    "default_mode",
    "identify",
    "install_new",
    "replace_in_place",
    "write_text",
    "writer_lock",
]

# A JSON fingerprint larger than this is not one of ours (real ones are tens of KB).
_MAX_JSON_BYTES = 16 * 2**20
_SQLITE_MAGIC = b"SQLite format 3\x00"
# The first bytes of every HTML report (twinrun.report writes them; its _page.MARKER is this text).
REPORT_MARKER = b"<!DOCTYPE html>\n<!-- twinrun report"
# The first bytes of a lock written by twinrun env freeze (twinrun.lock's _FREEZE_MARK).
FREEZE_MARKER = b"# twinrun env freeze"
# SQLite's side files: the WAL starts with 0x377f0682 or 0x377f0683 (big-endian), a rollback
# journal with d9d505f920a163d7, the WAL index (-shm) with its version 3007000 (native order).
_WAL_MAGICS = (bytes.fromhex("377f0682"), bytes.fromhex("377f0683"))
_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
_SHM_VERSION = 3007000


class Kind(enum.StrEnum):
    """The kinds of files twinrun writes, each recognised by its content."""

    TRACE = "trace"
    ENV = "env"
    RESULTS = "results"
    REPORT = "report"
    LOCK = "lock"

    @property
    def label(self) -> str:
        return {"trace": "twinrun trace", "env": "twinrun env fingerprint (JSON)",
                "results": "twinrun sweep results file", "report": "twinrun report",
                "lock": "file written by twinrun env freeze"}[self.value]


def identify(path: str | os.PathLike) -> Kind | None:
    """The kind of twinrun artefact at ``path`` by its content, or None (missing, unreadable, not a
    regular file, or anything else). Reads without running anything stored in the file."""
    p = Path(path)
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            head = os.pread(fd, len(REPORT_MARKER), 0)
        finally:
            os.close(fd)
    except OSError:
        return None
    if head.startswith(REPORT_MARKER):
        return Kind.REPORT
    if head.startswith(FREEZE_MARKER):
        return Kind.LOCK
    if head[:16] == _SQLITE_MAGIC:
        return _identify_sqlite(p)
    if head.lstrip()[:1] == b"{" and st.st_size <= _MAX_JSON_BYTES:
        return _identify_json(p)
    return None


def _identify_sqlite(p: Path) -> Kind | None:
    from ._sqlite import decode_json, open_readonly

    try:
        # A trace of a killed run (status "running", its -wal missing) is still a trace to replace.
        with open_readonly(p, what="a twinrun file", fix="", error=UsageError, finished=lambda _db: True) as db:
            rows = dict(db.query("SELECT key, value FROM meta WHERE key IN ('format', 'schema')"))
            if rows.get("format") == "twinrun-trace":
                return Kind.TRACE
            schema = rows.get("schema")
            if isinstance(schema, str) and decode_json(schema, what="schema", path=p,
                                                       error=UsageError) == "twinrun-sweep":
                return Kind.RESULTS
    except (TwinrunError, ValueError, TypeError):
        return None
    return None


def _identify_json(p: Path) -> Kind | None:
    from ._sqlite import decode_json

    try:
        obj = decode_json(p.read_bytes(), what="the file", path=p, error=UsageError, types=(dict,))
    except (OSError, TwinrunError):
        return None
    schema = obj.get("schema")
    return Kind.ENV if isinstance(schema, str) and schema.startswith("twinrun.env/") else None


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode when both exist, else the same resolved path."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    with contextlib.suppress(OSError, RuntimeError):
        return a.resolve() == b.resolve()
    return False


def check_target(path: str | os.PathLike, kind: Kind, *,
                 protected: Iterable[tuple[str, str | os.PathLike | None]] = (), option: str = "-o") -> Path:
    """``path`` as a Path if twinrun may write a ``kind`` there, else a one-line :class:`UsageError`.

    Allowed: a path that does not exist (in an existing, writable folder), an empty regular file, or
    a regular file that is a twinrun artefact of the same ``kind``. ``protected``: ``(label, path)``
    pairs that must never be written, e.g. ``("the --against reference", against)``, ``("the
    script", script)``; a hard link or another spelling of one of them counts as it. ``option``
    names the option in messages (``-o``, ``--keep-traces``).
    """
    text = os.fspath(path)
    p = Path(text)
    if not text or text.endswith(os.sep) or p.name in ("", ".", ".."):
        raise UsageError(f"{option} {text!r} names a folder; give a file path, e.g. {option} out.{_suffix(kind)}")
    for label, other in protected:
        if other is not None and _same(p, Path(other)):
            raise UsageError(f"{option} {p} is {label}: writing there would destroy it; choose another path")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        _check_folder(p, option)
        _check_stale_siblings(p, kind, option)
        return p
    except OSError as e:
        raise UsageError(f"{option} {p}: cannot inspect it ({e.strerror}); choose another path") from None
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{option} {p} is a symbolic link; twinrun does not write through links: give the real "
                         "path, or another one")
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {p} is a folder; give a file path inside it, e.g. {p / f'out.{_suffix(kind)}'}")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{option} {p} is a {_special(st.st_mode)}, not a regular file; twinrun writes only "
                         "regular files: choose another path")
    if st.st_size == 0:
        _check_stale_siblings(p, kind, option)
        return p
    found = identify(p)
    if found is None:
        raise UsageError(f"{option} {p} exists and is not a {kind.label}: writing there would destroy it; choose "
                         "another path (or delete the file yourself if you mean to replace it)")
    if found != kind:
        raise UsageError(f"{option} {p} is a {found.label}, not a {kind.label}: twinrun replaces a file only with "
                         "one of the same kind; choose another path")
    return p


def _suffix(kind: Kind) -> str:
    return {Kind.TRACE: "trace", Kind.ENV: "json", Kind.RESULTS: "db", Kind.REPORT: "html", Kind.LOCK: "lock.txt"}[kind]


def _special(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _check_folder(p: Path, option: str) -> None:
    folder = p.parent
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise UsageError(f"{option} {p}: folder {folder} does not exist; create it first") from None
    except OSError as e:
        raise UsageError(f"{option} {p}: cannot use folder {folder} ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {p}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {p}: cannot write in folder {folder} (permission denied); choose another path")


def _sqlite_siblings(p: Path) -> list[Path]:
    return [Path(f"{p}{suffix}") for suffix in ("-wal", "-shm", "-journal")]


def _is_sqlite_sidecar(side: Path) -> bool:
    """Whether ``side`` (a -wal, -shm or -journal path) holds SQLite's own side-file format."""
    try:
        st = os.lstat(side)
        if not stat.S_ISREG(st.st_mode):
            return False
        if st.st_size == 0:
            return True
        with open(side, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    name = side.name
    if name.endswith("-wal"):
        return head[:4] in _WAL_MAGICS
    if name.endswith("-journal"):
        return head == _JOURNAL_MAGIC or head == bytes(8)   # a zeroed header: a finished journal
    return len(head) >= 4 and int.from_bytes(head[:4], sys.byteorder) == _SHM_VERSION


def _check_stale_siblings(p: Path, kind: Kind, option: str) -> None:
    if kind not in (Kind.TRACE, Kind.RESULTS):
        return
    for side in _sqlite_siblings(p):
        if os.path.lexists(side) and not _is_sqlite_sidecar(side):
            raise UsageError(f"{option} {p}: {side} exists and is not SQLite's; it would be taken for the new "
                             "file's log: move it away or choose another path")


def replace_in_place(path: str | os.PathLike, kind: Kind, *,
                     protected: Iterable[tuple[str, str | os.PathLike | None]] = (), option: str = "-o") -> Path:
    """Check ``path`` (:func:`check_target`), then remove the old artefact there and SQLite's side
    files beside it, so the caller can create a new one in place. Returns the path."""
    p = check_target(path, kind, protected=protected, option=option)
    for side in (p, *_sqlite_siblings(p)):
        if side != p and not _is_sqlite_sidecar(side):
            continue
        try:
            os.remove(side)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise UsageError(f"{option} {p}: cannot replace {side} ({e.strerror}); choose another path") from None
    return p


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def default_mode() -> int:
    """The permissions of a new file (0666 less the umask): for a file made at a temporary name (mkstemp
    makes it 0600) that is then published."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, kind: Kind, *, protected: Iterable[tuple[str, str | os.PathLike | None]] = (),
                 option: str = "-o", binary: bool = False) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder, renamed over it on success.

    The target is checked before (and again just before the rename: another process may have put a
    file there meanwhile). On any error the temporary file is removed and the target is untouched.
    The new file gets the old file's permissions, or the usual ones (0666 less the umask).
    """
    protected = list(protected)
    p = check_target(path, kind, protected=protected, option=option)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent or ".", prefix=f".{p.name}.", suffix=".twinrun-tmp")
    except OSError as e:
        raise UsageError(f"{option} {p}: cannot write in its folder ({e.strerror}); choose another path") from None
    try:
        f: IO = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        check_target(p, kind, protected=protected, option=option)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, kind: Kind, *,
               protected: Iterable[tuple[str, str | os.PathLike | None]] = (), option: str = "-o") -> Path:
    """Write ``text`` to ``path`` atomically under the same-kind rule (:func:`atomic_write`).

    >>> import tempfile, os, json
    >>> p = os.path.join(tempfile.mkdtemp(), "env.json")
    >>> _ = write_text(p, json.dumps({"schema": "twinrun.env/1"}), Kind.ENV)
    >>> _ = write_text(p, json.dumps({"schema": "twinrun.env/1", "again": True}), Kind.ENV)  # same kind: replaced
    >>> identify(p)
    <Kind.ENV: 'env'>
    """
    try:
        with atomic_write(path, kind, protected=protected, option=option) as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write it ({e.strerror}); choose a writable path") from None
    return Path(path)


def install_new(tmp: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Publish the finished file ``tmp`` at ``path`` only if nothing is there yet; True if it was.

    A hard link never replaces an existing file, so when two processes race to create ``path`` one
    wins and the other gets False (and should open the winner's file). ``tmp`` is removed either
    way. Where hard links are not supported, an exclusive rename check is used instead.
    """
    tmp, path = os.fspath(tmp), os.fspath(path)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):
            return False
        os.replace(tmp, path)   # no hard links here: a narrow race remains
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, *, what: str = "file",
                on_busy: Callable[[Path], str] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` while the block writes it.

    A second process asking for the same lock gets one :class:`UsageError` line at once (never a
    wait, never two writers). SQLite's own locks are POSIX ``fcntl`` locks, which Linux keeps apart
    from ``flock``, so this does not interfere with SQLite on local disks; on NFS, where ``flock``
    is emulated with ``fcntl``, do not use it on a database that is open. The lock dies with the
    process, so a killed writer never leaves it behind.
    """
    import fcntl

    p = Path(path)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = on_busy(p) if on_busy else (f"another twinrun process is writing {what} {p} right now; wait "
                                                  "for it to finish, or write to another file")
            raise UsageError(message) from None
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock
