"""Opening a twinrun SQLite file (a trace or a sweep results file) for reading, safely.

A file handed to ``twinrun diff``, ``compare`` or ``--against`` may come from anyone. SQLite keeps
SQL inside the file (views, triggers, generated columns, index expressions), and a reader that
selects a generated column runs its expression: a 28 KB file whose ``digest`` column is
``hex(zeroblob(4e8))`` makes every read allocate gigabytes. :func:`open_readonly` therefore:

1. checks the path is a readable regular file (not a FIFO, device, folder or symlink loop) with the
   SQLite header, through a non-blocking descriptor (a FIFO swapped in cannot hang it);
2. never changes the file: without a ``-wal``/``-journal`` beside it, it is opened read-only
   (``mode=ro`` in a URI built by :func:`uri_of`, so ``%``, ``#`` and ``?`` in a name are the
   name's, never URI syntax); with one, both files are copied into a private temporary folder
   and the copy is read (SQLite's recovery rewrites the log and its index, which a reader of the
   originals must not do);
3. notices a WAL-mode file whose ``-wal`` is missing (a killed writer leaves the main file in WAL
   mode: header bytes 18-19 are 2): its last transactions are in that missing file, so the file
   is reported as cut off unless the caller can tell it was finished;
4. refuses a schema with anything executable: views, triggers, virtual tables, generated columns,
   explicit indexes (only SQLite's automatic ones), unknown ``sqlite_*`` tables; optionally it
   checks the tables and columns against the expected ones (:func:`expected_columns`);
5. bounds what SQLite will do: ``trusted_schema=OFF``, ``query_only=ON``, no memory-mapped I/O,
   limits on value length, SQL length, columns, expression depth and attached databases, a process
   heap limit, and an authorizer that allows only reading and a few harmless functions.

Values read are still untrusted: :func:`decode_json` and :func:`decode_shape` decode them with
bounds on size, nesting and element counts, and :func:`expect_type` checks an SQLite value's type
(they live in ``twinrun._decode``, which env fingerprints use too, and are re-exported here).

>>> import sqlite3, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.db")
>>> c = sqlite3.connect(path); c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
... # doctest: +ELLIPSIS
<sqlite3.Cursor object at ...>
>>> c.execute("INSERT INTO meta VALUES ('format', 'demo')") and c.commit(); c.close()
>>> with open_readonly(path, expected={"meta": [("key", "TEXT"), ("value", "TEXT")]}) as db:
...     db.query("SELECT value FROM meta WHERE key = ?", ("format",))
[('demo',)]
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ._decode import DEFAULT_MAX_JSON_DEPTH, decode_json, decode_shape, expect_type, json_depth
from ._errors import BadTraceError, TwinrunError

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_VALUE_BYTES",
    "SQLITE_MAGIC",
    "ReadOnlyDB",
    "cut_off_message",
    "decode_json",
    "decode_shape",
    "expect_type",
    "expected_columns",
    "is_wal_mode",
    "json_depth",
    "open_for_update",
    "open_readonly",
    "uri_of",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100

# The longest single value (text or blob) SQLite will hand back; a trace keeps values of at most
# 65,536 elements (1 MiB of complex128) and headers of a few hundred KB, a results file series of
# a few MB. Longer is refused by SQLite itself ("string or blob too big") before it is allocated.
DEFAULT_MAX_VALUE_BYTES = 64 * 2**20
# SQLite's own heap, for the whole process (PRAGMA hard_heap_limit only ever lowers it).
_HEAP_LIMIT = 1 * 2**30

# Limits on what a statement may be; our queries are short and simple. Applied before the schema
# is first parsed, so a schema that needs more is refused as malformed.
_LIMITS = {
    "SQLITE_LIMIT_SQL_LENGTH": 1_000_000,
    "SQLITE_LIMIT_COLUMN": 100,
    "SQLITE_LIMIT_EXPR_DEPTH": 100,
    "SQLITE_LIMIT_COMPOUND_SELECT": 8,
    "SQLITE_LIMIT_VDBE_OP": 100_000,
    "SQLITE_LIMIT_FUNCTION_ARG": 8,
    "SQLITE_LIMIT_ATTACHED": 0,
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 100,
    "SQLITE_LIMIT_VARIABLE_NUMBER": 100,
    "SQLITE_LIMIT_TRIGGER_DEPTH": 0,
}

# SQLite's own tables that a twinrun file may hold (AUTOINCREMENT, ANALYZE); nothing in them runs.
_INTERNAL_TABLES = re.compile(r"sqlite_(sequence|stat[1-4])")
# Functions a reader's own SQL may call. Anything else is denied at prepare time. substr: a kept value
# of a schema-2 trace is a slice of its step's blob (it returns at most what the file holds).
_FUNCTIONS = frozenset({"count", "min", "max", "length", "typeof", "coalesce", "ifnull", "substr"})
_PRAGMAS = frozenset({"quick_check", "integrity_check", "table_xinfo", "table_info", "user_version",
                      "page_count", "page_size", "schema_version", "journal_mode", "query_only",
                      "trusted_schema"})


def uri_of(path: str | os.PathLike, **params: str) -> str:
    """A ``file:`` URI naming exactly ``path``, with query ``params`` (e.g. ``mode="ro"``).

    ``%``, ``#``, ``?`` and spaces in the name are percent-escaped, so ``x%41.db`` stays
    ``x%41.db`` (not ``xA.db``) and ``r#1.db`` is not cut at ``#``.

    >>> uri_of("/tmp/x%41 #1?.db", mode="ro")
    'file:///tmp/x%2541%20%231%3F.db?mode=ro'
    """
    from urllib.parse import urlencode

    uri = Path(os.path.abspath(os.fspath(path))).as_uri()
    return f"{uri}?{urlencode(params)}" if params else uri


def is_wal_mode(header: bytes) -> bool:
    """Whether an SQLite header (its first 20 bytes at least) says the file is in WAL mode: the
    file format write and read versions (bytes 18 and 19) are 2 in WAL mode, 1 in rollback mode."""
    return len(header) >= 20 and (header[18] == 2 or header[19] == 2)


def expected_columns(ddl: str) -> dict[str, list[tuple[str, str]]]:
    """``{table: [(column, declared type), ...]}`` of the tables a DDL script creates, read back
    from an in-memory database so that it matches what ``PRAGMA table_xinfo`` says of a file.

    >>> expected_columns("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    {'meta': [('key', 'TEXT'), ('value', 'TEXT')]}
    """
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(ddl)
        names = [r[0] for r in mem.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        return {n: [(r[1], r[2]) for r in mem.execute(f"PRAGMA table_xinfo({_quote(n)})")] for n in names}
    finally:
        mem.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ReadOnlyDB:
    """A twinrun SQLite file opened by :func:`open_readonly`. ``query`` turns any SQLite error
    into the caller's error class, naming the file; ``close`` removes a private copy."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, error: type[TwinrunError], what: str,
                 fix: str, copy_dir: str | None, wal_missing: bool):
        self.path = path
        self.conn = conn
        self.error = error
        self.what = what
        self.fix = fix
        self.copied = copy_dir is not None
        self.wal_missing = wal_missing
        self._copy_dir = copy_dir
        self._finalizer = weakref.finalize(self, _cleanup, conn, copy_dir)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """All rows of ``sql``; a corrupt page, an oversized value or a denied operation becomes one
        ``self.error`` naming the file."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DataError as e:  # "string or blob too big": a value over the length limit
            raise self.error(f"{self.path} holds a value larger than twinrun reads ({e}); it was not written by "
                             f"twinrun, or is corrupt; {self.fix}") from None
        except sqlite3.DatabaseError as e:
            raise self.error(f"{self.path} is truncated or corrupt ({e}); {self.fix}") from None
        except MemoryError:
            raise self.error(f"{self.path}: reading it ran out of memory; it is corrupt or not twinrun's; "
                             f"{self.fix}") from None

    def tables(self) -> dict[str, list[tuple[str, str]]]:
        """``{table: [(column, declared type), ...]}`` of the file's own tables."""
        names = [r[0] for r in self.query("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY rowid")]
        return {n: [(r[1], r[2]) for r in self.query(f"PRAGMA table_xinfo({_quote(n)})")]
                for n in names if not _INTERNAL_TABLES.fullmatch(n)}

    def require_tables(self, expected: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        """Raise ``self.error`` unless the file has exactly the ``expected`` tables and columns
        (names and declared types, in order)."""
        have = self.tables()
        missing = [t for t in expected if t not in have]
        if missing:
            raise self.error(f"{self.path} is not {self.what}: it has no table {missing[0]!r}; {self.fix}")
        extra = [t for t in have if t not in expected]
        if extra:
            raise self.error(f"{self.path} has a table {extra[0]!r} that {self.what} does not have: it was written "
                             f"by another program or a newer twinrun; {self.fix}")
        for table, cols in expected.items():
            got = [(c.lower(), (t or "").upper()) for c, t in have[table]]
            want = [(c.lower(), (t or "").upper()) for c, t in cols]
            if got != want:
                raise self.error(f"{self.path}: table {table!r} has columns {_cols(got)}, not {_cols(want)} as in "
                                 f"{self.what}; it was written by another program or a newer twinrun; {self.fix}")

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReadOnlyDB({str(self.path)!r}, copied={self.copied}, wal_missing={self.wal_missing})"


def _cols(cols: Sequence[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{c} {t}".strip() for c, t in cols) + ")"


def _cleanup(conn: sqlite3.Connection, copy_dir: str | None) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()
    if copy_dir is not None:
        shutil.rmtree(copy_dir, ignore_errors=True)


def open_readonly(path: str | os.PathLike, *, what: str = "a twinrun trace",
                  fix: str = "pass a file written by twinrun",
                  error: type[TwinrunError] = BadTraceError,
                  expected: Mapping[str, Sequence[tuple[str, str]]] | None = None,
                  finished: Callable[[ReadOnlyDB], bool] | None = None,
                  max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> ReadOnlyDB:
    """Open the SQLite file at ``path`` for reading without running anything stored in it and
    without changing it (or its ``-wal``/``-shm``/``-journal``). Raises ``error`` (one line naming
    the file, ``what`` it should be and ``fix``) for anything that is not a safe, readable file.

    ``expected``: the tables and columns it must have exactly (see :func:`expected_columns`); leave
    it None to check them later with :meth:`ReadOnlyDB.require_tables`, e.g. after reading a
    schema version so that a newer file gets the "upgrade twinrun" message.

    ``finished``: for a WAL-mode file whose ``-wal`` is missing, says from the readable part whether
    the writer had finished (a trace's status is no longer "running"). Without it, or when it says
    no, the file is reported as cut off, naming the missing ``-wal``.
    """
    p = Path(path)
    header = _read_header(p, what, fix, error)
    wal, journal = Path(f"{p}-wal"), Path(f"{p}-journal")
    wal_size, journal_size = _sibling_size(wal, p, error), _sibling_size(journal, p, error)
    wal_mode = is_wal_mode(header)
    wal_missing = wal_mode and not wal_size
    copy_dir = None
    try:
        if wal_mode or wal_size is not None or journal_size:
            # SQLite must replay a -wal (or roll back a hot -journal) to read the last transactions,
            # and doing so rewrites the originals: read a private copy instead.
            copy_dir, target = _private_copy(p, wal if wal_size else None, journal if journal_size else None, error)
            conn = sqlite3.connect(uri_of(target, mode="rw"), uri=True, check_same_thread=False)
        else:
            conn = sqlite3.connect(uri_of(p, mode="ro"), uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        if copy_dir is not None:
            shutil.rmtree(copy_dir, ignore_errors=True)
        raise error(f"cannot open {p} ({e}); {fix}") from None
    db = ReadOnlyDB(p, conn, error=error, what=what, fix=fix, copy_dir=copy_dir, wal_missing=wal_missing)
    try:
        _harden(conn, max_value_bytes)
        _check_schema(db)
        if wal_missing:
            has_tables = bool(db.query("SELECT 1 FROM sqlite_schema WHERE type = 'table' LIMIT 1"))
            if not has_tables or finished is None or not finished(db):
                raise error(cut_off_message(p))
        if expected is not None:
            db.require_tables(expected)
    except BaseException:
        db.close()
        raise
    return db


def open_for_update(path: str | os.PathLike, *, expected: Mapping[str, Sequence[tuple[str, str]]],
                    what: str = "a twinrun sweep results file", fix: str = "choose another file",
                    error: type[TwinrunError] = BadTraceError, timeout: float = 30.0) -> sqlite3.Connection:
    """Open an existing twinrun file to add to it (``sweep -o`` resuming a results file), after the
    same checks as :func:`open_readonly`: a regular SQLite file whose schema has exactly the
    ``expected`` tables and columns and nothing that runs -- a trigger would run on every INSERT.
    The connection has ``trusted_schema=OFF`` and SQLite's limits; the caller owns and closes it."""
    p = Path(path)
    _read_header(p, what, fix, error)
    try:
        conn = sqlite3.connect(uri_of(p, mode="rw"), uri=True, timeout=timeout, check_same_thread=False)
    except sqlite3.Error as e:
        raise error(f"cannot open {p} ({e}); {fix}") from None
    db = ReadOnlyDB(p, conn, error=error, what=what, fix=fix, copy_dir=None, wal_missing=False)
    try:
        for name, value in _LIMITS.items():
            limit = getattr(sqlite3, name, None)
            if limit is not None:
                conn.setlimit(limit, value)
        conn.execute("PRAGMA trusted_schema=OFF")
        _check_schema(db)
        db.require_tables(expected)
    except BaseException:
        db.close()
        raise
    db._finalizer.detach()   # hand the connection over; the caller closes it
    return conn


def cut_off_message(path: str | os.PathLike) -> str:
    """What to say of a WAL-mode file copied without its ``-wal``."""
    p = Path(path)
    return (f"{p}: the run was cut off (killed while writing) and its last steps are in the missing file "
            f"{p.name}-wal; copy {p.name}-wal beside it and read it again, or record the run again")


def _read_header(p: Path, what: str, fix: str, error: type[TwinrunError]) -> bytes:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise error(f"{p} is a symbolic link to a file that does not exist; {fix}") from None
        raise error(f"{p}: no such file; check the path") from None
    except OSError as e:
        raise error(f"cannot read {p}: {_why(e)}; {fix}") from None
    _require_regular(p, st.st_mode, what, fix, error)
    if st.st_size == 0:
        raise error(f"{p} is empty, not {what}; {fix}")
    try:
        # Non-blocking: were a FIFO swapped in after the stat, opening it must not wait for a writer.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"cannot read {p}: {_why(e)}; {fix}") from None
    try:
        _require_regular(p, os.fstat(fd).st_mode, what, fix, error)
        header = os.pread(fd, _HEADER_BYTES, 0)
    except OSError as e:
        raise error(f"cannot read {p}: {_why(e)}; {fix}") from None
    finally:
        os.close(fd)
    if not header.startswith(SQLITE_MAGIC):
        raise error(f"{p} is not {what} (not an SQLite file); {fix}")
    if len(header) < _HEADER_BYTES:
        raise error(f"{p} is truncated ({len(header)} bytes, shorter than an SQLite header); {fix}")
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1) or header[18] not in (1, 2) or header[19] not in (1, 2):
        raise error(f"{p} is corrupt (bad SQLite header); {fix}")
    return header


def _require_regular(p: Path, mode: int, what: str, fix: str, error: type[TwinrunError]) -> None:
    if stat.S_ISDIR(mode):
        raise error(f"{p} is a folder, not {what}; {fix}")
    if not stat.S_ISREG(mode):
        raise error(f"{p} is a {_kind(mode)}, not a regular file; {fix}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link loop"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


def _sibling_size(sib: Path, p: Path, error: type[TwinrunError]) -> int | None:
    """Size of ``sib`` (a -wal or -journal), None when absent; a sibling that is not a regular file
    is refused: SQLite would open it as the log."""
    try:
        st = os.stat(sib)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(f"cannot read {sib} beside {p}: {_why(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{sib} beside {p} is a {_kind(st.st_mode) if not stat.S_ISDIR(st.st_mode) else 'folder'}, "
                    "not SQLite's log file; move it away")
    return st.st_size


def _private_copy(p: Path, wal: Path | None, journal: Path | None,
                  error: type[TwinrunError]) -> tuple[str, Path]:
    """Copy the file and its log into a new folder only this user can read; return (folder, copy).

    A writer still running may change the files while they are copied: the copy is retried when
    their sizes or times moved meanwhile (a -wal copied mid-append is fine: SQLite replays only
    frames whose checksums hold, i.e. whole committed transactions)."""
    sources = [(p, "db"), *((s, f"db{suffix}") for s, suffix in ((wal, "-wal"), (journal, "-journal")) if s)]
    folder = tempfile.mkdtemp(prefix=f"twinrun-read-{os.getpid()}-")
    try:
        for _attempt in range(3):
            before = [_stamp(s) for s, _ in sources]
            for src, name in sources:
                shutil.copyfile(src, os.path.join(folder, name))
            if [_stamp(s) for s, _ in sources] == before:
                return folder, Path(folder) / "db"
        raise error(f"{p} changed while it was being read (is a run still writing it?); read it again when "
                    "the run has finished")
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise error(f"cannot read {p}: copying it (with its log) to read it failed: {_why(e)}") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _stamp(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_size, st.st_mtime_ns


def _harden(conn: sqlite3.Connection, max_value_bytes: int) -> None:
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, int(max_value_bytes))
    for name, value in _LIMITS.items():
        limit = getattr(sqlite3, name, None)
        if limit is not None:
            conn.setlimit(limit, value)
    for pragma in ("trusted_schema=OFF", "query_only=ON", "mmap_size=0", "cell_size_check=ON",
                   f"hard_heap_limit={_HEAP_LIMIT}"):
        conn.execute(f"PRAGMA {pragma}")
    conn.set_authorizer(_authorize)


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK if (arg2 or "").lower() in _FUNCTIONS else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:   # reading a pragma only (a table name for table_xinfo), never setting one
        name = (arg1 or "").lower()
        if name in _PRAGMAS and (arg2 is None or name in ("table_xinfo", "table_info")):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_TRANSACTION:   # BEGIN/COMMIT for a consistent snapshot
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _check_schema(db: ReadOnlyDB) -> None:
    """Refuse anything in the schema that SQLite would run while reading."""
    rows = db.query("SELECT type, name, tbl_name, sql FROM sqlite_schema")
    for kind, name, _table, sql in rows:
        label = f"{kind} {name!r}"
        if kind in ("view", "trigger"):
            raise db.error(f"{db.path} has a {label}: {db.what} has none, and twinrun never runs SQL stored in a "
                           f"file; {db.fix}")
        if kind == "index":
            if sql is not None:  # an explicit index, possibly on expressions: twinrun creates none
                raise db.error(f"{db.path} has an index {name!r} that {db.what} does not have (its expressions "
                               f"would run when the file is checked); {db.fix}")
            continue
        if kind != "table":
            raise db.error(f"{db.path} has a schema entry of type {kind!r}; {db.fix}")
        if name.startswith("sqlite_"):
            if not _INTERNAL_TABLES.fullmatch(name):
                raise db.error(f"{db.path} has an unknown SQLite table {name!r}; {db.fix}")
            continue
        if not isinstance(sql, str) or not re.match(r"\s*CREATE\s+TABLE\b", sql, re.IGNORECASE):
            raise db.error(f"{db.path} has a virtual or unusual table {name!r}; {db.what} has none; {db.fix}")
        for col in db.query(f"PRAGMA table_xinfo({_quote(name)})"):
            if col[6]:   # hidden: 2 virtual generated, 3 stored generated, 1 virtual-table hidden
                raise db.error(f"{db.path}: column {col[1]!r} of table {name!r} is a generated column (SQL that "
                               f"runs when it is read); {db.what} has none, and twinrun never runs SQL stored in a "
                               f"file; {db.fix}")
