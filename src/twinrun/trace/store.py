"""The trace file: one SQLite database per run, written step by step and read back without executing anything.

A run is a sequence of steps; within a step, events come in program order. Each event carries a
128-bit digest of dtype + shape + bytes, float64 stats, and, for small tensors within a budget, the
raw value. Writing (``TraceWriter``, ``writer.py``) commits every step, so a run killed mid-way leaves
a trace readable up to its last committed step. Reading (``Trace``, here) never executes anything from
the file: values are raw bytes with an allow-listed dtype and a shape. The tables of each schema
version are in ``schema.py``; this reader reads versions 1 and 2.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.trace")
>>> w = TraceWriter(path, {"command": ["demo"]})
>>> e = w.add(0, "param", "w", np.arange(4, dtype=np.float32))
>>> w.commit_step(0); w.close("complete")
>>> t = Trace.open(path)
>>> t.status, t.steps(), t.events()[0].name
('complete', [0], 'w')
>>> t.value(t.events()[0]).tolist()
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import BadTraceError
from .digest import STORAGE
from .events import PHASES, Event
from .schema import FORMAT, PACKED_COLUMNS, SCHEMA_VERSION, event_columns, packed_value_offset, unpack
from .schema import split_digests as _split_digests
from .schema import value_nbytes as _nbytes
from .writer import DEFAULT_VALUE_BUDGET, DEFAULT_VALUE_THRESHOLD, TraceWriter

__all__ = ["DEFAULT_VALUE_BUDGET", "DEFAULT_VALUE_THRESHOLD", "FORMAT", "SCHEMA_VERSION", "Trace", "TraceWriter"]

# --- reading -------------------------------------------------------------------------------------

def _decode(blob: bytes, dtype: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    storage = STORAGE.get(dtype)
    if storage is None:
        raise BadTraceError(f"trace {path} holds a value of dtype {dtype!r}, which twinrun does not read; "
                            "it was written by another program")
    dt = np.dtype(storage)
    count = math.prod(shape)
    if len(blob) != count * dt.itemsize:
        raise BadTraceError(f"trace {path} is corrupt: a {dtype}{list(shape)} value has {len(blob)} bytes; "
                            "record the run again")
    return np.frombuffer(blob, dtype=dt).reshape(shape)


def _event(row: tuple[Any, ...], path: Path) -> Event:
    step, idx, phase, name, dtype, shape, h, l2, mean, maxabs, nonfinite, has_value, samples = row
    try:
        shape = tuple(int(s) for s in json.loads(shape))
    except (TypeError, ValueError):
        raise BadTraceError(f"trace {path} is corrupt (bad shape {shape!r}); record the run again") from None
    return Event(step, idx, phase, name, dtype, shape, h,
                 math.nan if l2 is None else l2, math.nan if mean is None else mean,
                 math.nan if maxabs is None else maxabs, nonfinite, bool(has_value), _split_digests(samples))


class Trace:
    """A trace file opened for reading. Use ``Trace.open(path)``."""

    def __init__(self, path: Path, db: sqlite3.Connection, meta: dict[str, str]) -> None:
        self.path = path
        self._db = db
        self._meta = meta
        self.schema_version = int(meta["schema_version"])
        try:
            self.header: dict[str, Any] = json.loads(meta.get("header", "{}"))
        except ValueError:
            raise BadTraceError(f"{path}: the trace header is not valid JSON; record the run again") from None
        self.status: str = meta.get("status", "running")
        self._steps: list[int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str] | Trace) -> Trace:
        """Open a trace for reading; raises ``BadTraceError`` naming the file and the fix."""
        if isinstance(path, Trace):
            return path
        path = Path(path)
        fix = "pass a file written by `twinrun run` or twinrun.record()"
        if not path.exists():
            raise BadTraceError(f"{path}: no such file; check the path")
        if path.is_dir():
            raise BadTraceError(f"{path} is a folder, not a trace; {fix}")
        size = path.stat().st_size
        if size == 0:
            raise BadTraceError(f"{path} is empty, not a trace; {fix}")
        with open(path, "rb") as f:
            magic = f.read(16)
        if magic != b"SQLite format 3\x00":
            raise BadTraceError(f"{path} is not a twinrun trace (not an SQLite file); {fix}")
        try:
            db = _connect_read(path)
            db.execute("PRAGMA query_only=ON")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "steps", "events"} <= tables:
                raise BadTraceError(f"{path} is an SQLite file but not a twinrun trace; {fix}")
            meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.OperationalError as e:
            if (path.parent / f"{path.name}-wal").exists():
                raise BadTraceError(f"cannot read {path} ({e}): the trace of an unfinished run keeps its last steps "
                                    f"in {path.name}-wal, and reading them needs a writable folder; copy both "
                                    "files to one") from None
            raise BadTraceError(f"{path} is truncated or corrupt ({e}); record the run again") from None
        except sqlite3.DatabaseError as e:
            raise BadTraceError(f"{path} is truncated or corrupt ({e}); record the run again") from None
        if meta.get("format") != FORMAT or "schema_version" not in meta:
            raise BadTraceError(f"{path} is an SQLite file but not a twinrun trace; {fix}")
        try:
            version = int(meta["schema_version"])
        except ValueError:
            raise BadTraceError(f"{path} has a bad schema version {meta['schema_version']!r}; "
                                "record the run again") from None
        if version > SCHEMA_VERSION:
            raise BadTraceError(f"{path} is of trace schema {version}, newer than this twinrun reads "
                                f"({SCHEMA_VERSION}); upgrade twinrun (pip install -U twinrun)")
        try:
            # A truncated file opens fine; the integrity check reads every page and notices.
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise BadTraceError(f"{path} is truncated or corrupt ({e}); record the run again") from None
        if check != "ok":
            raise BadTraceError(f"{path} is truncated or corrupt ({check}); record the run again")
        return cls(path, db, meta)

    # reading
    def steps(self) -> list[int]:
        """The committed steps, in order."""
        if self._steps is None:
            self._steps = [r[0] for r in self._query("SELECT step FROM steps ORDER BY step")]
        return list(self._steps)

    def events(self, step: int | None = None) -> list[Event]:
        """The events of ``step`` (all committed steps when None), in program order."""
        cols = event_columns(self.schema_version)
        if step is None:
            rows = self._query(f"SELECT {cols} FROM events WHERE step IN (SELECT step FROM steps) "
                               "ORDER BY step, idx")
        else:
            rows = self._query(f"SELECT {cols} FROM events WHERE step = ? "
                               "AND step IN (SELECT step FROM steps) ORDER BY idx", (step,))
        events = [_event(r, self.path) for r in rows]
        if self.schema_version >= 2:   # the packed small events, merged in by index
            packed = [e for row in self._packed_rows(step) for e in unpack(row, self.path)]
            if packed:
                events += packed
                events.sort(key=lambda e: (e.step, e.index))
        return events

    def _packed_rows(self, step: int | None) -> list[tuple[Any, ...]]:
        where = "" if step is None else " AND step = ?"
        return self._query(f"SELECT {PACKED_COLUMNS} FROM packed WHERE step IN (SELECT step FROM steps){where}",
                           () if step is None else (step,))

    def step_summaries(self) -> dict[int, tuple[int, str, list[str]]] | None:
        """``{step: (events, summary, phases)}`` of every committed step: equal summaries mean identical
        steps (every event's phase, name, dtype, shape and digest, in order); ``phases``: those the step
        holds. None for a trace of schema 1, which has no summaries."""
        if self.schema_version < 2:
            return None
        out = {}
        for step, n, summary, phases in self._query("SELECT step, events, summary, phases FROM steps"):
            if not isinstance(summary, str) or not isinstance(phases, str) or not isinstance(n, int):
                raise BadTraceError(f"{self.path} is corrupt: step {step} has no summary; record the run again")
            out[step] = (n, summary, [p for p in phases.split(",") if p])
        return out

    def event_counts(self) -> dict[int, dict[str, int]]:
        """``{step: {phase: number of events}}`` of the committed steps, in one query."""
        out: dict[int, dict[str, int]] = {s: {} for s in self.steps()}
        for step, phase, n in self._query("SELECT step, phase, COUNT(*) FROM events WHERE step IN "
                                          "(SELECT step FROM steps) GROUP BY step, phase"):
            out.setdefault(int(step), {})[str(phase)] = int(n)
        if self.schema_version >= 2:
            for step, codes in self._query("SELECT step, phases FROM packed WHERE step IN (SELECT step FROM steps)"):
                counts = out.setdefault(int(step), {})
                for code, n in zip(*np.unique(np.frombuffer(codes if isinstance(codes, bytes) else b"\xff", np.uint8),
                                              return_counts=True)):
                    if code >= len(PHASES):
                        raise BadTraceError(f"{self.path} is corrupt: a packed event of step {step} has no phase; "
                                            "record the run again")
                    phase = str(PHASES[code])
                    counts[phase] = counts.get(phase, 0) + int(n)
        return out

    def value(self, event: Event) -> np.ndarray | None:
        """The kept value of ``event`` as a read-only array, or None when it was not kept.

        Dtypes NumPy lacks come back as their raw bits (bfloat16 as int16, float8 as uint8).
        """
        if not event.has_value:
            return None
        if self.schema_version < 2:
            rows = self._query("SELECT value FROM events WHERE step = ? AND idx = ?", (event.step, event.index))
        else:   # its bytes in the step's blob, from its row or its step's packed row
            got = self._query("SELECT value_off FROM events WHERE step = ? AND idx = ?", (event.step, event.index))
            offset = got[0][0] if got else packed_value_offset(self._query, event, self.path)
            if offset is None:
                return None
            if type(offset) is not int or offset < 0:
                raise BadTraceError(f"{self.path} is corrupt: event {event.step}:{event.index} has a bad value "
                                    "offset; record the run again")
            rows = self._query("SELECT substr(data, ?, ?) FROM step_values WHERE step = ?",
                               (offset + 1, _nbytes(event), event.step))
        if not rows or rows[0][0] is None:
            return None
        return _decode(rows[0][0], event.dtype, event.shape, self.path)

    def meta(self, key: str, default: Any = None) -> Any:
        """An extra JSON value stored with ``TraceWriter.set_meta`` (e.g. ``"divergence"``)."""
        raw = self._meta.get(f"x.{key}")
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            return default

    @property
    def created(self) -> float | None:
        with contextlib.suppress(KeyError, ValueError):
            return float(self._meta["created"])
        return None

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise BadTraceError(f"{self.path} is truncated or corrupt ({e}); record the run again") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, status={self.status!r}, steps={len(self.steps())})"


def _connect_read(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri()
    # A trace of a killed run keeps its last steps in the -wal file beside it; reading them needs
    # SQLite's shared-memory index, which read-only mode cannot create. Read-write mode is used
    # only when we may write there (query_only stops any write).
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        return sqlite3.connect(f"{uri}?mode=rw", uri=True, check_same_thread=False)
    return sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)


