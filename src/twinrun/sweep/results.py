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

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import BadResultsError
from .run import SweepRun

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Results"]

SCHEMA = "twinrun-sweep"
SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, seed INTEGER, env TEXT NOT NULL, status TEXT NOT NULL,
    returncode INTEGER, error TEXT, duration REAL, host TEXT, finished REAL,
    PRIMARY KEY (arm, idx));
CREATE TABLE IF NOT EXISTS metrics (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, value REAL, nonfinite TEXT,
    series TEXT NOT NULL, PRIMARY KEY (arm, idx, name));
"""


def _enc(v: float) -> tuple[float | None, str | None]:
    return (v, None) if math.isfinite(v) else (None, str(v))


class Results:
    """A sweep results file. ``Results.open(path)`` reads one (read-only); ``Results.create`` starts
    or resumes one for a given script identity and design."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, Any]):
        self.path, self._conn, self.meta = path, conn, meta
        self._cache: dict[bool, list[SweepRun]] = {}   # runs(), read once per file state

    # opening --------------------------------------------------------------------------------
    @staticmethod
    def _read_meta(path: Path, conn: sqlite3.Connection) -> dict:
        try:
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError:
            raise BadResultsError(f"{path} is not a twinrun sweep results file (make one with: twinrun sweep "
                                  "SCRIPT -o FILE)") from None
        meta = {k: json.loads(v) for k, v in rows}
        if meta.get("schema") != SCHEMA:
            raise BadResultsError(f"{path} is not a twinrun sweep results file (make one with: twinrun sweep "
                                  "SCRIPT -o FILE)")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise BadResultsError(f"{path} is a sweep results file of schema version {meta.get('schema_version')}; "
                                  f"this twinrun reads version {SCHEMA_VERSION}: use the matching twinrun version "
                                  "or rerun the sweep into a new file")
        return meta

    @classmethod
    def open(cls, path: str | os.PathLike) -> Results:
        """Open an existing results file for reading; never runs anything from it."""
        path = Path(path)
        if not path.is_file():
            raise BadResultsError(f"{path} does not exist; make it with: twinrun sweep SCRIPT -o {path}")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.DatabaseError as e:
            raise BadResultsError(f"{path} cannot be opened as SQLite ({e})") from None
        return cls(path, conn, cls._read_meta(path, conn))

    @classmethod
    def create(cls, path: str | os.PathLike, identity: dict, design: dict, env: Callable[[], dict]) -> Results:
        """Start ``path``, or resume it when it holds a sweep of the same script, arguments and design."""
        path = Path(path)
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("SELECT 1 FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError:
            raise BadResultsError(f"{path} exists and is not a twinrun sweep results file; choose another -o") from None
        if fresh:
            meta = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **identity, **design,
                    "twinrun_version": _version(), "created": time.time(), "env": env(), "state": "running"}
            with conn:
                conn.executescript(_DDL)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            return cls(path, conn, meta)
        meta = cls._read_meta(path, conn)
        if meta["script"] != identity["script"]:
            raise BadResultsError(f"{path} holds a sweep of {meta['script']}, not {identity['script']}: "
                                  "use another -o file for this script")
        if meta["script_sha256"] != identity["script_sha256"]:
            raise BadResultsError(f"{identity['script']} changed since {path} was started (sha256 "
                                  f"{meta['script_sha256'][:12]} then, {identity['script_sha256'][:12]} now): its "
                                  "runs are of the old code; use another -o file, or delete it to start over")
        if meta["args"] != identity["args"]:
            raise BadResultsError(f"{path} holds a sweep with arguments {meta['args']}, not {identity['args']}: "
                                  "use another -o file for other arguments")
        for key in ("design", "vary", "base_seed"):
            if meta.get(key) != design.get(key):
                raise BadResultsError(f"{path} holds a sweep with {key} {meta.get(key)!r}, not {design.get(key)!r}: "
                                      "use another -o file")
        return cls(path, conn, meta)

    def close(self) -> None:
        self._conn.close()

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
    def done(self) -> dict[tuple[str, int], str]:
        """``{(arm, idx): status}`` of every recorded run."""
        return {(a, i): s for a, i, s in self._conn.execute("SELECT arm, idx, status FROM runs")}

    def runs(self, *, series: bool = False) -> list[SweepRun]:
        """Every recorded run with its metrics (and series when asked); read once, then cached."""
        if series not in self._cache:
            self._cache[series] = self._read_runs(series)
        return self._cache[series]

    def _read_runs(self, series: bool) -> list[SweepRun]:
        out = {}
        for a, i, seed, env, status, rc, err, dur, host, _ in self._conn.execute(
                "SELECT * FROM runs ORDER BY arm, idx"):
            out[(a, i)] = SweepRun(a, i, seed, json.loads(env), status, rc, err, dur, host)
        cols = "arm, idx, name, value, nonfinite" + (", series" if series else "")
        for row in self._conn.execute(f"SELECT {cols} FROM metrics ORDER BY arm, idx, name"):
            r = out.get((row[0], row[1]))
            if r is None:
                continue
            r.metrics[row[2]] = float(row[4]) if row[4] is not None else row[3]
            if series:
                r.series[row[2]] = [(s, float(v)) for s, v in json.loads(row[5])]
        return list(out.values())

    def metric_names(self) -> list[str]:
        return [n for (n,) in self._conn.execute("SELECT DISTINCT name FROM metrics ORDER BY name")]

    def arms(self) -> list[str]:
        return [a for (a,) in self._conn.execute("SELECT DISTINCT arm FROM runs ORDER BY arm")]


def _version() -> str:
    from .. import __version__

    return __version__
