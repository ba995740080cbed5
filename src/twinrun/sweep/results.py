"""The results file of a sweep: one SQLite file per sweep, resumable, consistent after a crash.

- ``meta``: schema version, script identity (path, sha256 of its source, arguments), design, the
  environment fingerprint (once);
- ``runs``: one row per (arm, index): seed, seed variables, status, return code, error tail,
  duration, host;
- ``metrics``: per run and metric, the last value and the whole series.

Each finished run is committed in one transaction, so a killed sweep leaves a consistent file;
rerunning the same command skips the runs already recorded. Reading never runs anything from it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._artifacts import Kind, check_target, default_mode, install_new, writer_lock
from .._decode import decode_json, expect_type
from .._display import shown
from .._errors import BadResultsError
from .._sqlite import ReadOnlyDB, expected_columns, open_for_update, open_readonly
from ..redact import redact_argv
from .plan import args_sha256
from .run import SweepRun

__all__ = ["DDL", "SCHEMA", "SCHEMA_VERSION", "Results"]

SCHEMA = "twinrun-sweep"
SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, seed INTEGER, env TEXT NOT NULL, status TEXT NOT NULL,
    returncode INTEGER, error TEXT, duration REAL, host TEXT, finished REAL,
    PRIMARY KEY (arm, idx));
CREATE TABLE IF NOT EXISTS metrics (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, value REAL, nonfinite TEXT,
    series TEXT NOT NULL, PRIMARY KEY (arm, idx, name));
"""


_MAKE = "make one with: twinrun sweep SCRIPT -o FILE"
_AGAIN = "rerun the sweep into a new file"
_NONFINITE = ("nan", "inf", "-inf")
# The meta keys sweep and compare rely on, and their JSON types.
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "design": str, "vary": (str, type(None)), "base_seed": (int, type(None)), "state": str, "env": dict,
    "created": (int, float), "twinrun_version": str, "args_sha256": str}


@functools.cache
def _expected() -> dict[str, list[tuple[str, str]]]:
    return expected_columns(DDL)


def _enc(v: float) -> tuple[float | None, str | None]:
    return (v, None) if math.isfinite(v) else (None, str(v))


class Results:
    """A sweep results file. ``Results.open(path)`` reads one (read-only); ``Results.create`` starts
    or resumes one for a given script identity and design."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, Any], *,
                 reader: ReadOnlyDB | None = None, lock: contextlib.ExitStack | None = None):
        self.path, self._conn, self.meta = path, conn, meta
        self._reader = reader
        self._lock = lock   # the writer's lock, released after the connection is closed
        self._cache: dict[bool, list[SweepRun]] = {}   # runs(), read once per file state

    # opening --------------------------------------------------------------------------------
    @staticmethod
    def _read_meta(path: Path, rows: list[tuple]) -> dict:
        """The meta table, each value decoded with bounds and the keys sweep relies on type-checked."""
        raw = {k: v for k, v in rows if isinstance(k, str)}
        if raw.get("format") == '"twinrun-trace"' or raw.get("format") == "twinrun-trace":
            raise BadResultsError(f"{path} is a twinrun trace, not a sweep results file: compare traces with "
                                  f"twinrun diff {path} OTHER.trace")
        if "schema" not in raw:
            raise BadResultsError(f"{path} is not a twinrun sweep results file ({_MAKE})")
        meta = {}
        for k, v in rows:
            if not isinstance(k, str):
                raise BadResultsError(f"{path} is corrupt: its meta table has a key that is not text; {_AGAIN}")
            meta[k] = decode_json(v, what=f"meta {shown(k, 40)!r}", path=path, error=BadResultsError, fix=_AGAIN)
        if meta.get("schema") != SCHEMA:
            raise BadResultsError(f"{path} is not a twinrun sweep results file ({_MAKE})")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise BadResultsError(f"{path} is a sweep results file of schema version "
                                  f"{shown(meta.get('schema_version'), 40)}; this twinrun reads version "
                                  f"{SCHEMA_VERSION}: use the matching twinrun version or rerun the sweep into a "
                                  "new file")
        for key, types in _META_TYPES.items():
            if key in meta and not (isinstance(meta[key], types) and not isinstance(meta[key], bool)):
                raise BadResultsError(f"{path} is corrupt: meta {key!r} is a {type(meta[key]).__name__}; {_AGAIN}")
        if not isinstance(meta.get("script"), str) or not isinstance(meta.get("script_sha256"), str):
            raise BadResultsError(f"{path} is corrupt: it does not name its script; {_AGAIN}")
        if not isinstance(meta.get("args"), list) or not all(isinstance(a, str) for a in meta["args"]):
            raise BadResultsError(f"{path} is corrupt: meta 'args' is not a list of strings; {_AGAIN}")
        return meta

    @classmethod
    def open(cls, path: str | os.PathLike) -> Results:
        """Open an existing results file for reading: nothing stored in it runs and nothing on disk
        changes (``twinrun._sqlite.open_readonly``), and every value read is checked."""
        path = Path(path)
        db = open_readonly(path, what="a twinrun sweep results file", fix=_MAKE, error=BadResultsError)
        try:
            meta_cols = db.tables().get("meta")
            if meta_cols is None or [c for c, _ in meta_cols] != ["key", "value"]:
                raise BadResultsError(f"{path} is an SQLite file but not a twinrun sweep results file ({_MAKE})")
            meta = cls._read_meta(path, db.query("SELECT key, value FROM meta"))
            db.require_tables(_expected())
            return cls(path, db.conn, meta, reader=db)
        except BaseException:
            db.close()
            raise

    @classmethod
    def create(cls, path: str | os.PathLike, identity: dict, design: dict, env: Callable[[], dict]) -> Results:
        """Start ``path``, or resume it when it holds a sweep of the same script, arguments and design.

        Only a missing path, an empty file or a results file is written (anything else, the script
        itself included, is a one-line ``UsageError``); an existing one is opened after its schema is
        checked (a trigger in it would run on every insert). One sweep at a time writes a file: the
        ``Results`` holds a lock (``_artifacts.writer_lock``) until closed, and a second sweep of
        the same file is refused at once. A new file is built at a temporary name, locked, and
        published only if no other sweep published one first (``_artifacts.install_new``)."""
        path = check_target(path, Kind.RESULTS, protected=[("the script", identity.get("script"))])
        lock = contextlib.ExitStack()
        try:
            empty = path.exists() and path.stat().st_size == 0
            if empty or not path.exists():
                meta = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **identity, **design,
                        "twinrun_version": _version(), "created": time.time(), "env": env(), "state": "running"}
                if _publish(path, meta, lock, empty=empty):
                    return cls(path, _open_for_update(path), meta, lock=lock)
                # another sweep published it first: resume that file (refused below while it runs)
            lock.enter_context(writer_lock(path, on_busy=_busy))
            conn = _open_for_update(path)
            try:
                meta = cls._read_meta(path, conn.execute("SELECT key, value FROM meta").fetchall())
                cls._check_same_sweep(path, meta, identity, design)
            except BaseException:
                conn.close()
                raise
            return cls(path, conn, meta, lock=lock)
        except BaseException:
            lock.close()
            raise

    @staticmethod
    def _check_same_sweep(path: Path, meta: dict, identity: dict, design: dict) -> None:
        """A one-line error unless the file holds a sweep of this script, with these arguments and design."""
        if meta["script"] != identity["script"]:
            raise BadResultsError(f"{path} holds a sweep of {meta['script']}, not {identity['script']}: "
                                  "use another -o file for this script")
        if meta["script_sha256"] != identity["script_sha256"]:
            raise BadResultsError(f"{identity['script']} changed since {path} was started (sha256 "
                                  f"{meta['script_sha256'][:12]} then, {identity['script_sha256'][:12]} now): its "
                                  "runs are of the old code; use another -o file, or delete it to start over")
        # Files before args_sha256 kept the arguments themselves.
        if meta.get("args_sha256", args_sha256(meta["args"])) != identity["args_sha256"]:
            then, now = " ".join(redact_argv(meta["args"])), " ".join(identity["args"])
            raise BadResultsError(f"{path} holds a sweep with other arguments ({then!r}, not {now!r}): use another "
                                  "-o file for other arguments")
        for key in ("design", "vary", "base_seed"):
            if meta.get(key) != design.get(key):
                raise BadResultsError(f"{path} holds a sweep with {key} {meta.get(key)!r}, not {design.get(key)!r}: "
                                      "use another -o file")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        else:
            self._conn.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # writing --------------------------------------------------------------------------------
    def add(self, run: SweepRun) -> None:
        """Record one finished run (replacing an earlier record of it) in one transaction."""
        self._cache.clear()
        with self._conn:
            self._conn.execute("DELETE FROM metrics WHERE arm = ? AND idx = ?", (run.arm, run.idx))
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.arm, run.idx, run.seed, json.dumps(run.env), run.status, run.returncode,
                 run.error, run.duration, run.host, time.time()))
            for name, series in run.series.items():
                value, nonfinite = _enc(series[-1][1])
                text = json.dumps([[s, v if math.isfinite(v) else str(v)] for s, v in series])
                self._conn.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                                   (run.arm, run.idx, name, value, nonfinite, text))

    def set_state(self, state: str) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (json.dumps(state),))
        self.meta["state"] = state

    # reading --------------------------------------------------------------------------------
    def _query(self, sql: str) -> list[tuple]:
        if self._reader is not None:
            return self._reader.query(sql)
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as e:
            raise BadResultsError(f"{self.path} is truncated or corrupt ({e}); {_AGAIN}") from None

    def done(self) -> dict[tuple[str, int], str]:
        """``{(arm, idx): status}`` of every recorded run."""
        out = {}
        for a, i, s in self._query("SELECT arm, idx, status FROM runs"):
            self._expect(a, str, "an arm")
            self._expect(i, int, "a run index")
            out[(a, i)] = self._expect(s, str, "a run's status")
        return out

    def runs(self, *, series: bool = False) -> list[SweepRun]:
        """Every recorded run with its metrics (and series when asked); read once, then cached."""
        if series not in self._cache:
            self._cache[series] = self._read_runs(series)
        return self._cache[series]

    def _expect(self, value: Any, types: type | tuple[type, ...], what: str) -> Any:
        return expect_type(value, types, what=what, path=self.path, error=BadResultsError, fix=_AGAIN)

    def _read_runs(self, series: bool) -> list[SweepRun]:
        out = {}
        for a, i, seed, env, status, rc, err, dur, host, _ in self._query("SELECT * FROM runs ORDER BY arm, idx"):
            where = f"run {shown(a, 40)}/{i}"
            env = decode_json(env, what=f"the seed variables of {where}", path=self.path, error=BadResultsError,
                              fix=_AGAIN, types=(dict,))
            if not all(isinstance(v, str) for v in env.values()):
                raise BadResultsError(f"{self.path} is corrupt: the seed variables of {where} are not text; {_AGAIN}")
            out[(a, i)] = SweepRun(
                self._expect(a, str, "an arm"), self._expect(i, int, "a run index"),
                self._expect(seed, (int, type(None)), f"the seed of {where}"), env,
                self._expect(status, str, f"the status of {where}"),
                self._expect(rc, (int, type(None)), f"the exit code of {where}"),
                self._expect(err, (str, type(None)), f"the error of {where}"),
                float(self._expect(dur, (int, float), f"the duration of {where}")),
                self._expect(host, (str, type(None)), f"the host of {where}"))
        cols = "arm, idx, name, value, nonfinite" + (", series" if series else "")
        for row in self._query(f"SELECT {cols} FROM metrics ORDER BY arm, idx, name"):
            r = out.get((row[0], row[1]))
            if r is None:
                continue
            name = self._expect(row[2], str, "a metric name")
            r.metrics[name] = self._metric_value(row[3], row[4], f"{shown(name, 40)!r} of run {r.arm}/{r.idx}")
            if series:
                r.series[name] = self._series(row[5], f"the series of {shown(name, 40)!r} of run {r.arm}/{r.idx}")
        return list(out.values())

    def _metric_value(self, value: Any, nonfinite: Any, what: str) -> float:
        if nonfinite is not None:
            if nonfinite not in _NONFINITE:
                raise BadResultsError(f"{self.path} is corrupt: metric {what} is marked {shown(nonfinite, 20)!r}, not "
                                      f"nan or inf; {_AGAIN}")
            return float(nonfinite)
        return float(self._expect(value, (int, float), f"metric {what}"))

    def _series(self, raw: Any, what: str) -> list[tuple[int | None, float]]:
        items = decode_json(raw, what=what, path=self.path, error=BadResultsError, fix=_AGAIN, types=(list,))
        out: list[tuple[int | None, float]] = []
        for item in items:
            ok = isinstance(item, list) and len(item) == 2 and (item[0] is None or type(item[0]) is int)
            v = item[1] if ok else None
            if not ok or not ((isinstance(v, (int, float)) and not isinstance(v, bool)) or v in _NONFINITE):
                raise BadResultsError(f"{self.path} is corrupt: {what} is not a list of [step, value]; {_AGAIN}")
            out.append((item[0], float(v)))
        return out

    def metric_names(self) -> list[str]:
        return [self._expect(n, str, "a metric name") for (n,) in
                self._query("SELECT DISTINCT name FROM metrics ORDER BY name")]

    def arms(self) -> list[str]:
        return [self._expect(a, str, "an arm") for (a,) in self._query("SELECT DISTINCT arm FROM runs ORDER BY arm")]


def _open_for_update(path: Path) -> sqlite3.Connection:
    return open_for_update(path, expected=_expected(), what="a twinrun sweep results file", error=BadResultsError,
                           fix="choose another -o file")


def _busy(path: Path) -> str:
    return (f"another twinrun sweep is writing {path} right now; wait for it to finish (then run this again to "
            "add to it), or sweep into another file (-o)")


def _publish(path: Path, meta: dict[str, Any], lock: contextlib.ExitStack, *, empty: bool) -> bool:
    """Build a new results file at a temporary name beside ``path``, lock it, and publish it at ``path``
    unless another sweep did first. True (and the lock added to ``lock``) when this one is published.
    ``empty``: ``path`` was an empty file (the user's placeholder): it is removed first, if still empty."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".twinrun-tmp")
    except OSError as e:
        raise BadResultsError(f"cannot create {path} ({e.strerror}); choose another -o") from None
    os.close(fd)
    mine = contextlib.ExitStack()
    try:
        conn = sqlite3.connect(tmp)
        try:
            with conn:
                conn.executescript(DDL)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        finally:
            conn.close()
        os.chmod(tmp, default_mode())
        mine.enter_context(writer_lock(tmp, on_busy=_busy))   # the lock is the inode's: it goes with the file
        if empty:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_size == 0:   # still the placeholder, not another sweep's new file
                    os.unlink(path)
        # never os.replace: a sweep that published meanwhile would lose its file under its open connection
        published = install_new(tmp, path)
    except sqlite3.Error as e:
        mine.close()
        raise BadResultsError(f"cannot create {path} ({e}); choose another -o") from None
    except BaseException:
        mine.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if published:
        lock.enter_context(mine)
    else:
        mine.close()
    return published


def _version() -> str:
    from .. import __version__

    return __version__
