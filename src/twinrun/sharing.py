"""A copy of a trace, a sweep results file or an environment fingerprint, fit to attach to a public issue.

A trace explains a divergence by recording the run's circumstances, and some of them are private:
the host name, the user's name inside paths, the working folder, the script's arguments, samples of
the data. :func:`share_copy` writes a copy with those replaced (``twinrun.redact.for_sharing``) and
everything that explains a divergence kept (digests, statistics, versions, CPU flags, thread
settings, seeds), so ``twinrun diff`` reads the copy as it read the original:

==================  ====================================================================================
trace               header and meta: secrets redacted, host name ``<host>``, working folder ``<cwd>``,
                    the script's folder ``<script-dir>``, home folders ``~`` / ``/home/<user>``, the
                    user's name ``<user>``; the kept values of ``input`` events dropped (samples of
                    the data); every digest, statistic and other kept value unchanged
results file        meta, each run's seed variables, error tail and host likewise; the arguments'
                    SHA-256 dropped (it could be matched against guesses); metrics unchanged
fingerprint (JSON)  every value likewise
==================  ====================================================================================

The copy is rebuilt from twinrun's own schema (nothing of the original's schema is copied) and
written to a temporary name renamed into place; the output may only be new, empty or a twinrun
file of the same kind, never the input.

>>> share_copy("run.trace", "run.shared.trace")        # doctest: +SKIP
SharedCopy(kind='trace', source='run.trace', output='run.shared.trace', dropped_values=3)
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._artifacts import Kind, atomic_write, check_target, default_mode, identify, replace_in_place
from ._decode import decode_json
from ._errors import UsageError
from ._sqlite import ReadOnlyDB, open_readonly
from .redact import for_sharing

__all__ = ["SharedCopy", "default_output", "share_copy"]


@dataclass(frozen=True)
class SharedCopy:
    """What :func:`share_copy` wrote: the kind of file, where, and how many kept values it dropped."""

    kind: str
    source: str
    output: str
    dropped_values: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "output": self.output,
                "dropped_values": self.dropped_values}


def default_output(path: str | os.PathLike[str]) -> Path:
    """``run.trace`` -> ``run.shared.trace`` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shared{p.suffix}")


def share_copy(path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> SharedCopy:
    """Write a copy of the twinrun file at ``path`` safe to share publicly (see the module's table).

    ``output`` defaults to :func:`default_output`. A file that is not a trace, a results file or a
    fingerprint, or an output that is not new, empty or of the same kind, is a one-line ``UsageError``.
    """
    src = Path(path)
    kind = identify(src)
    if kind is None:
        raise UsageError(f"{src} is not a twinrun trace, sweep results file or environment fingerprint (or cannot "
                         "be read); give a file written by twinrun run, twinrun sweep or twinrun env -o")
    out = check_target(output if output is not None else default_output(src), kind,
                       protected=[("the file being copied", src)])
    if kind == Kind.ENV:
        return _share_env(src, out)
    return _share_sqlite(src, out, kind)


def _scrubber(hostnames: Iterable[str], paths: dict[str, str]) -> Callable[[Any], Any]:
    hosts = {socket.gethostname(), *hostnames}
    users = set()
    for name in (_login(), os.environ.get("USER"), os.environ.get("LOGNAME"), os.environ.get("SUDO_USER")):
        # "root" is too common a word to replace everywhere; /root itself is the home folder below
        if name and name != "root":
            users.add(name)
    home = os.path.expanduser("~")
    every = {**({home: "~"} if home not in ("", "/") else {}), **paths}
    return lambda obj: for_sharing(obj, hostnames=hosts, users=users, paths=every)


def _login() -> str | None:
    with contextlib.suppress(Exception):   # getpass raises different errors where there is no login name
        return getpass.getuser()
    return None


def _folder_of(path: Any) -> str | None:
    return str(Path(path).parent) if isinstance(path, str) and path.startswith(("/", "\\")) else None


# --- fingerprints ----------------------------------------------------------------------------------

def _share_env(src: Path, out: Path) -> SharedCopy:
    try:
        raw = src.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {src}: {e.strerror}") from None
    fp = decode_json(raw, what="the fingerprint", path=src, error=UsageError, fix="write it again with twinrun env -o",
                     types=(dict,))
    host = fp.get("host")
    scrub = _scrubber([host.get("hostname", "")] if isinstance(host, dict) else [], {})
    with atomic_write(out, Kind.ENV, protected=[("the file being copied", src)]) as f:
        f.write(json.dumps(scrub(fp), indent=2) + "\n")
    return SharedCopy(str(Kind.ENV), str(src), str(out))


# --- traces and results files ----------------------------------------------------------------------

def _share_sqlite(src: Path, out: Path, kind: Kind) -> SharedCopy:
    if kind == Kind.TRACE:
        from .trace import Trace
        from .trace.schema import SCHEMAS

        with Trace.open(src) as t:
            t.check()   # every event and value readable: never share (or hide) a corrupt file
            header = t.header
        paths = {p: label for p, label in ((_folder_of(header.get("script")), "<script-dir>"),
                                          (header.get("cwd"), "<cwd>")) if isinstance(p, str) and p}
        env = header.get("env")
        host = env.get("host") if isinstance(env, dict) else None
        scrub = _scrubber([host.get("hostname", "")] if isinstance(host, dict) else [], paths)
        # Written in trace schema 1, which every twinrun reads: a kept value is its event's own blob
        # there, so dropping it drops its bytes (in schema 2 values share one blob per step).
        return _rebuild(src, out, kind, SCHEMAS[1], lambda db, tmp: _copy_trace(src, db, tmp, scrub))
    from .sweep.results import DDL as RESULTS_DDL
    from .sweep.results import Results

    with Results.open(src) as r:
        hosts = [x.host for x in r.runs() if x.host]
        script = r.meta.get("script")
    scrub = _scrubber(hosts, {p: "<script-dir>" for p in [_folder_of(script)] if p})
    return _rebuild(src, out, kind, RESULTS_DDL, lambda db, tmp: _copy_results(db, tmp, scrub))


def _rebuild(src: Path, out: Path, kind: Kind, ddl: str,
             copy: Callable[[ReadOnlyDB, sqlite3.Connection], int]) -> SharedCopy:
    """Create a new file with twinrun's ``ddl``, fill it with ``copy`` from the read-only original, and
    rename it over ``out``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".twinrun-tmp")
    except OSError as e:
        raise UsageError(f"-o {out}: cannot write in its folder ({e.strerror}); choose another path") from None
    os.close(fd)
    try:
        with open_readonly(src, what=f"a {kind.label}", fix="give a file written by twinrun") as db:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("BEGIN")
                for statement in filter(str.strip, ddl.split(";")):   # not executescript: it would commit
                    conn.execute(statement)
                dropped = copy(db, conn)
                conn.execute("COMMIT")
            finally:
                conn.close()
        os.chmod(tmp, default_mode())
        replace_in_place(out, kind, protected=[("the file being copied", src)])
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return SharedCopy(str(kind), str(src), str(out), dropped)


def _copy_trace(src: Path, db: ReadOnlyDB, conn: sqlite3.Connection, scrub: Callable[[Any], Any]) -> int:
    """Copy a trace of any schema this twinrun reads into ``conn`` (schema 1): meta scrubbed, every
    committed event as the reader checked it, the kept values of ``input`` events dropped."""
    from .trace import Trace
    from .trace.schema import shape_json, sql_float

    for key, value in db.query("SELECT key, value FROM meta"):
        if key == "header" or key.startswith("x."):
            value = json.dumps(scrub(json.loads(value)), sort_keys=True)
        elif key == "schema_version":
            value = "1"
        conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('x.shared', ?)",
                 (json.dumps({"by": "twinrun redact", "dropped": "kept values of input events"}),))
    conn.executemany("INSERT INTO steps VALUES (?, ?, ?)", db.query("SELECT step, events, committed FROM steps"))
    dropped = 0
    with Trace.open(src) as t:
        for step in t.steps():   # a step at a time: kept values can reach 64 MiB per trace
            rows = []
            for e in t.events(step):
                value = None
                if e.has_value:
                    if e.phase == "input":   # samples of the user's data
                        dropped += 1
                    else:
                        kept = t.value(e)
                        value = None if kept is None else kept.tobytes()
                samples = None if e.sample_digests is None else bytes.fromhex("".join(e.sample_digests))
                rows.append((e.step, e.index, e.phase, e.name, e.dtype, shape_json(tuple(e.shape)), e.digest,
                             sql_float(e.l2), sql_float(e.mean), sql_float(e.maxabs), e.nonfinite, value, samples))
            conn.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 13)})", rows)
    return dropped


def _copy_results(db: ReadOnlyDB, conn: sqlite3.Connection, scrub: Callable[[Any], Any]) -> int:
    for key, value in db.query("SELECT key, value FROM meta"):
        if key == "args_sha256":   # a hash of the real arguments can be matched against guesses
            continue
        conn.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(scrub(json.loads(value)))))
    for row in db.query("SELECT arm, idx, seed, env, status, returncode, error, duration, host, finished FROM runs"):
        arm, idx, seed, env, status, rc, error, duration, host, finished = row
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (arm, idx, seed, json.dumps(scrub(json.loads(env))), status, rc,
                      scrub(error) if isinstance(error, str) else error, duration,
                      None if host is None else "<host>", finished))
    conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                     db.query("SELECT arm, idx, name, value, nonfinite, series FROM metrics"))
    return 0
