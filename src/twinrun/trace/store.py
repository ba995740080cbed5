"""The trace file: one SQLite database per run, written step by step and read back without executing anything.

A run is a sequence of steps; within a step, events come in program order. Each event carries a
128-bit digest of dtype + shape + bytes, float64 stats, and, for small tensors within a budget, the
raw value. Writing (``TraceWriter``, ``writer.py``) commits every step, so a run killed mid-way leaves
a trace readable up to its last committed step. Reading (``Trace``, here) never executes anything from
the file (``twinrun._sqlite.open_readonly``) and checks every value it reads: values are raw bytes with
an allow-listed dtype and a shape. The tables of each schema version are in ``schema.py``; this reader
reads versions 1 and 2, each checked against its own tables and columns.

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
import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._decode import decode_json, decode_shape, expect_type
from .._display import shown
from .._errors import BadTraceError
from .._sqlite import ReadOnlyDB, expected_columns, open_readonly
from .digest import STORAGE
from .events import PHASES, STATUSES, Event
from .schema import AGAIN as _AGAIN
from .schema import FORMAT, PACKED_COLUMNS, SCHEMA_VERSION, SCHEMAS, event_columns, packed_value_offset, unpack
from .schema import split_digests as _split_digests
from .schema import value_nbytes as _nbytes
from .writer import DEFAULT_VALUE_BUDGET, DEFAULT_VALUE_THRESHOLD, TraceWriter

__all__ = ["DEFAULT_VALUE_BUDGET", "DEFAULT_VALUE_THRESHOLD", "FORMAT", "SCHEMA_VERSION", "Trace", "TraceWriter"]

_FIX = "pass a file written by `twinrun run` or twinrun.record()"
# A step's value blob is one SQLite blob, at most about 2**31 bytes: a larger offset is corrupt (and
# offset + 1 must fit SQLite's 64-bit integers).
_MAX_OFFSET = 2**40

# --- reading -------------------------------------------------------------------------------------


def _decode(blob: Any, dtype: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if type(blob) is not bytes:   # the message only when needed: a diff reads thousands of values
        expect_type(blob, bytes, what=f"a kept {shown(dtype, 40)}{list(shape)} value", path=path, fix=_AGAIN)
    storage = STORAGE.get(dtype)
    if storage is None:
        raise BadTraceError(f"trace {path} holds a value of dtype {shown(dtype, 40)!r}, which twinrun does not read; "
                            "it was written by another program")
    dt = np.dtype(storage)
    count = math.prod(shape)
    if len(blob) != count * dt.itemsize:
        raise BadTraceError(f"trace {path} is corrupt: a {dtype}{list(shape)} value has {len(blob)} bytes; "
                            "record the run again")
    return np.frombuffer(blob, dtype=dt).reshape(shape)


def _event(row: tuple[Any, ...], path: Path, shapes: dict[str, tuple[int, ...]]) -> Event:
    """One row of ``events`` as an Event, every column checked: a file from elsewhere may hold anything.

    ``shapes``: the shapes decoded so far (shape text -> dims); a trace repeats a few shapes many times.
    The common case is checked inline; ``_bad_event`` names what is wrong."""
    step, idx, phase, name, dtype, shape, h, l2, mean, maxabs, nonfinite, has_value, samples = row
    dims = shapes.get(shape) if type(shape) is str else None
    if dims is None:
        dims = decode_shape(shape, path=path, fix=_AGAIN)
        if len(shapes) < 4096:
            shapes[shape] = dims
    fl2, fmean, fmax = _stat(l2), _stat(mean), _stat(maxabs)
    if (phase not in PHASES or type(name) is not str or type(dtype) is not str or type(h) is not str
            or fl2 is None or fmean is None or fmax is None or type(nonfinite) is not int
            or (samples is not None and (type(samples) is not bytes or len(samples) % 16))):
        _bad_event(row, path)
    assert fl2 is not None and fmean is not None and fmax is not None
    return Event(step, idx, phase, name, dtype, dims, h, fl2, fmean, fmax, nonfinite, bool(has_value),
                 _split_digests(samples))


def _stat(x: Any) -> float | None:
    """A stored statistic as a float (NULL: NaN, as the writer stores it); None when it is not a number."""
    if x is None:
        return math.nan
    return float(x) if type(x) is float or type(x) is int else None


def _bad_event(row: tuple[Any, ...], path: Path) -> None:
    """Raise the one-line error that says which column of an event row is wrong."""
    step, idx, phase, name, dtype, _shape, h, l2, mean, maxabs, nonfinite, _has_value, _samples = row
    where = f"event {step}:{idx}"
    if phase not in PHASES:
        raise BadTraceError(f"{path} is corrupt: {where} has phase {shown(phase, 40)!r}, not one of "
                            f"{', '.join(PHASES)}; {_AGAIN}")
    for what, v in (("name", name), ("dtype", dtype), ("digest", h)):
        expect_type(v, str, what=f"the {what} of {where}", path=path, fix=_AGAIN)
    for x in (l2, mean, maxabs):
        if x is not None:
            expect_type(x, (int, float), what=f"a statistic of {where}", path=path, fix=_AGAIN)
    expect_type(nonfinite, int, what=f"the non-finite count of {where}", path=path, fix=_AGAIN)
    raise BadTraceError(f"{path} is corrupt: the per-sample digests of {where} are not 16-byte digests; {_AGAIN}")


def _finished(db: ReadOnlyDB) -> bool:
    """Whether a WAL-mode trace whose -wal is missing says it was closed (else it was cut off)."""
    with contextlib.suppress(BadTraceError):
        rows = db.query("SELECT value FROM meta WHERE key = 'status'")
        return bool(rows) and rows[0][0] in STATUSES and rows[0][0] != "running"
    return False


@functools.cache
def _expected(version: int) -> dict[str, list[tuple[str, str]]]:
    """The tables and columns of a trace of schema ``version`` (``schema.SCHEMAS``)."""
    return expected_columns(SCHEMAS[version])


class Trace:
    """A trace file opened for reading. Use ``Trace.open(path)``."""

    def __init__(self, path: Path, db: ReadOnlyDB, meta: dict[str, str]) -> None:
        self.path = path
        self._db = db
        self._meta = meta
        self.schema_version = int(meta["schema_version"])
        self.header: dict[str, Any] = decode_json(meta.get("header", "{}"), what="the trace header", path=path,
                                                  fix=_AGAIN, types=(dict,))
        self.status: str = meta.get("status", "running")
        if self.status not in STATUSES:
            raise BadTraceError(f"{path} is corrupt: its status {shown(self.status, 40)!r} is not one of "
                                f"{', '.join(STATUSES)}; {_AGAIN}")
        self._steps: list[int] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}   # shape text -> dims, decoded once

    @classmethod
    def open(cls, path: str | os.PathLike[str] | Trace) -> Trace:
        """Open a trace for reading; raises ``BadTraceError`` naming the file and the fix.

        Nothing stored in the file runs (``twinrun._sqlite.open_readonly``: no views, triggers or
        generated columns, SQLite's limits), the file and its ``-wal`` are never changed, its tables and
        columns are exactly those of its schema version (1 or 2), and every value read is checked before
        it is used."""
        if isinstance(path, Trace):
            return path
        path = Path(path)
        db = open_readonly(path, what="a twinrun trace", fix=_FIX, error=BadTraceError, finished=_finished)
        try:
            return cls(path, db, _read_meta(path, db))
        except BaseException:
            db.close()
            raise

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
        events = [_event(r, self.path, self._shapes) for r in rows]
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
            if type(summary) is not str or type(phases) is not str or type(n) is not int or n < 0:
                raise BadTraceError(f"{self.path} is corrupt: step {step} has no summary; {_AGAIN}")
            names = [p for p in phases.split(",") if p]
            if not all(p in PHASES for p in names):
                raise BadTraceError(f"{self.path} is corrupt: step {step} names phases {shown(phases, 60)!r}, not "
                                    f"among {', '.join(PHASES)}; {_AGAIN}")
            out[step] = (n, summary, names)
        return out

    def event_counts(self) -> dict[int, dict[str, int]]:
        """``{step: {phase: number of events}}`` of the committed steps, in one query."""
        out: dict[int, dict[str, int]] = {s: {} for s in self.steps()}
        for step, phase, n in self._query("SELECT step, phase, COUNT(*) FROM events WHERE step IN "
                                          "(SELECT step FROM steps) GROUP BY step, phase"):
            if phase not in PHASES:
                raise BadTraceError(f"{self.path} is corrupt: an event of step {step} has phase "
                                    f"{shown(phase, 40)!r}; {_AGAIN}")
            out.setdefault(int(step), {})[str(phase)] = int(n)
        if self.schema_version >= 2:
            for step, codes in self._query("SELECT step, phases FROM packed WHERE step IN (SELECT step FROM steps)"):
                counts = out.setdefault(int(step), {})
                for code, n in zip(*np.unique(np.frombuffer(codes if isinstance(codes, bytes) else b"\xff", np.uint8),
                                              return_counts=True), strict=True):
                    if code >= len(PHASES):
                        raise BadTraceError(f"{self.path} is corrupt: a packed event of step {step} has no phase; "
                                            f"{_AGAIN}")
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
            if not rows or rows[0][0] is None:
                return None
            return _decode(rows[0][0], event.dtype, event.shape, self.path)
        # schema 2: its bytes in the step's blob, from its row or its step's packed row
        got = self._query("SELECT value_off FROM events WHERE step = ? AND idx = ?", (event.step, event.index))
        offset = got[0][0] if got else packed_value_offset(self._query, event, self.path)
        if offset is None:
            return None
        if type(offset) is not int or not 0 <= offset < _MAX_OFFSET:
            raise BadTraceError(f"{self.path} is corrupt: event {event.step}:{event.index} has a value offset "
                                f"{shown(offset, 40)!r}, not a whole number from 0 to {_MAX_OFFSET:,}; {_AGAIN}")
        nbytes = _nbytes(event)
        if nbytes == 0:   # an empty tensor's value has no bytes (and its step may have no blob)
            return _decode(b"", event.dtype, event.shape, self.path)
        rows = self._query("SELECT substr(data, ?, ?) FROM step_values WHERE step = ?",
                           (offset + 1, nbytes, event.step))
        if not rows or rows[0][0] is None:
            raise BadTraceError(f"{self.path} is corrupt: the kept value of event {event.step}:{event.index} is "
                                f"missing from its step's values; {_AGAIN}")
        return _decode(rows[0][0], event.dtype, event.shape, self.path)

    def check(self) -> None:
        """Read every committed event and kept value once, so that a corrupt trace fails now (one
        ``BadTraceError``) rather than halfway through a run compared with it (``--against``)."""
        self.step_summaries()
        self.event_counts()
        for step in self.steps():
            for e in self.events(step):
                self.value(e)
        for key in self._meta:
            if key.startswith("x."):
                self.meta(key[2:])

    def meta(self, key: str, default: Any = None) -> Any:
        """An extra JSON value stored with ``TraceWriter.set_meta`` (e.g. ``"divergence"``)."""
        raw = self._meta.get(f"x.{key}")
        if raw is None:
            return default
        return decode_json(raw, what=f"its {shown(key, 40)!r} record", path=self.path, fix=_AGAIN)

    @property
    def created(self) -> float | None:
        with contextlib.suppress(KeyError, ValueError):
            return float(self._meta["created"])
        return None

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.query(sql, params)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, status={self.status!r}, steps={len(self.steps())})"


def _read_meta(path: Path, db: ReadOnlyDB) -> dict[str, str]:
    """The meta table of a trace, after checking that the file is one, of a schema this twinrun reads,
    with exactly the tables and columns of that schema, whole pages, and keys and steps of the right types."""
    tables = db.tables()
    if "meta" not in tables or [c for c, _ in tables["meta"]] != ["key", "value"]:
        raise BadTraceError(f"{path} is an SQLite file but not a twinrun trace; {_FIX}")
    rows = db.query("SELECT key, value FROM meta")
    meta = {k: v for k, v in rows if isinstance(k, str)}
    if meta.get("format") != FORMAT:
        if meta.get("schema") == '"twinrun-sweep"':
            raise BadTraceError(f"{path} is a twinrun sweep results file, not a trace: compare sweeps with "
                                f"twinrun compare {path}")
        raise BadTraceError(f"{path} is an SQLite file but not a twinrun trace; {_FIX}")
    version = meta.get("schema_version")
    if not isinstance(version, str) or not version.isdigit() or len(version) > 6:
        raise BadTraceError(f"{path} has a bad schema version {shown(version, 40)!r}; {_AGAIN}")
    if int(version) > SCHEMA_VERSION:
        raise BadTraceError(f"{path} is of trace schema {version}, newer than this twinrun reads "
                            f"({SCHEMA_VERSION}); upgrade twinrun (pip install -U twinrun)")
    if int(version) not in SCHEMAS:
        raise BadTraceError(f"{path} has a bad schema version {shown(version, 40)!r}; {_AGAIN}")
    # Each version's own tables and columns, exactly: a schema-2 file's packed rows and value blobs
    # are as checked as its events.
    db.require_tables(_expected(int(version)))
    # A truncated file opens fine; the integrity check reads every page and notices.
    check = db.query("PRAGMA quick_check")
    if not check or check[0][0] != "ok":
        problem = shown(check[0][0] if check else "no answer", 120)
        raise BadTraceError(f"{path} is truncated or corrupt ({problem}); {_AGAIN}")
    for k, v in rows:
        if not isinstance(k, str) or not isinstance(v, str):
            raise BadTraceError(f"{path} is corrupt: its meta table holds a {type(v).__name__} under "
                                f"{shown(k, 40)!r}, where twinrun writes text; {_AGAIN}")
    # Steps and indices order and select everything read later: they must be whole numbers. (The step
    # of steps, packed and step_values is an INTEGER PRIMARY KEY, which SQLite keeps an integer.)
    bad = db.query("SELECT (SELECT count(*) FROM events WHERE typeof(step) != 'integer' OR "
                   "typeof(idx) != 'integer') + (SELECT count(*) FROM steps WHERE typeof(step) != 'integer')")
    if bad and bad[0][0]:
        raise BadTraceError(f"{path} is corrupt: {bad[0][0]} event(s) or step(s) have a step or index that is "
                            f"not a whole number; {_AGAIN}")
    return meta
