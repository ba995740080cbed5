"""The trace file: one SQLite database per run, written step by step and read back without executing anything.

A run is a sequence of steps; within a step, events come in program order. Each event carries a
128-bit digest of dtype + shape + bytes, float64 stats, and, for small tensors within a budget, the
raw value. Writing commits every step, so a run killed mid-way leaves a trace readable up to its
last committed step. Reading never executes anything from the file: values are raw bytes with an
allow-listed dtype and a shape.

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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import BadTraceError, UsageError
from .._format import to_jsonable
from .digest import STORAGE, contiguous, digest_and_stats, sample_digests
from .events import PHASES, STATUSES, Event

__all__ = ["DEFAULT_VALUE_BUDGET", "DEFAULT_VALUE_THRESHOLD", "FORMAT", "SCHEMA_VERSION", "Trace", "TraceWriter"]

SCHEMA_VERSION = 1
FORMAT = "twinrun-trace"

# Values are kept for tensors of at most this many elements (a 10x2048 classifier weight fits, so
# its first divergence can be shown value by value) ...
DEFAULT_VALUE_THRESHOLD = 65_536
# ... and while the trace's kept values stay within this many bytes.
DEFAULT_VALUE_BUDGET = 64 * 2**20

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE steps (step INTEGER PRIMARY KEY, events INTEGER NOT NULL, committed REAL NOT NULL);
CREATE TABLE events (
    step INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    phase TEXT NOT NULL,
    name TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,
    digest TEXT NOT NULL,
    l2 REAL, mean REAL, maxabs REAL,
    nonfinite INTEGER NOT NULL,
    value BLOB,
    sample_digests BLOB,
    PRIMARY KEY (step, idx)
) WITHOUT ROWID;
"""


def _split_digests(blob: bytes | None) -> list[str] | None:
    if blob is None:
        return None
    return [blob[i:i + 16].hex() for i in range(0, len(blob), 16)]


# --- writing -------------------------------------------------------------------------------------

class TraceWriter:
    """Writes one trace file; every ``commit_step`` is a committed SQLite transaction.

    ``value_threshold`` (elements) and ``value_budget`` (bytes) bound which values are kept.
    An existing file at ``path`` is replaced.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *,
                 value_threshold: int = DEFAULT_VALUE_THRESHOLD, value_budget: int = DEFAULT_VALUE_BUDGET):
        self.path = Path(path)
        self.value_threshold = int(value_threshold)
        self.value_budget = int(value_budget)
        self.value_bytes = 0
        self.status = "running"
        self._next_index: dict[int, int] = {}
        self._open_step: int | None = None
        self._lock = threading.Lock()
        self.closed = False
        try:
            header_json = json.dumps(header, sort_keys=True, allow_nan=False, default=to_jsonable)
        except (TypeError, ValueError) as e:
            raise UsageError(f"trace header for {self.path} is not JSON-ready: {e}") from None
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}{suffix}")
        if self.path.parent and not self.path.parent.exists():
            raise UsageError(f"cannot write trace {self.path}: folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise UsageError(f"cannot write trace {self.path}: {e}") from None
        # WAL: a commit appends to the log; a SIGKILL after it loses nothing (the OS holds the
        # bytes). close() folds the log back so a finished trace is a single file.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(stmt)
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("format", FORMAT),
            ("schema_version", str(SCHEMA_VERSION)),
            ("header", header_json),
            ("status", "running"),
            ("created", f"{time.time():.3f}"),
            ("value_threshold", str(self.value_threshold)),
            ("value_budget", str(self.value_budget)),
            ("value_bytes", "0"),
        ])
        self._db.execute("COMMIT")

    # writing events
    def add(self, step: int, phase: str, name: str, array: np.ndarray, *, dtype: str | None = None,
            per_sample: bool = False, keep_value: bool | None = None, same_as: Event | None = None) -> Event:
        """Record one tensor of ``step`` (uncommitted until ``commit_step(step)``); return its Event.

        ``array`` is a NumPy array (raw integer bits for dtypes NumPy lacks, with ``dtype`` naming
        the real one, e.g. ``"bfloat16"``). ``per_sample`` also stores a digest per slice along dim 0.
        ``keep_value`` forces (True) or forbids (False) keeping the value; by default it is kept when
        small enough and within the budget.
        """
        if phase not in PHASES:
            raise UsageError(f"unknown trace phase {phase!r}; use one of {', '.join(PHASES)}")
        array = contiguous(np.asarray(array))
        dtype = dtype or str(array.dtype)
        shape = tuple(int(s) for s in array.shape)
        if same_as is not None and same_as.dtype == dtype and tuple(same_as.shape) == shape:
            # The very tensor of an earlier event, unchanged (e.g. a Sequential's output is its last
            # child's): reuse digest and stats instead of reading it again.
            h, l2, mean, maxabs, nonfinite = (same_as.digest, same_as.l2, same_as.mean, same_as.maxabs,
                                               same_as.nonfinite)
        else:
            h, (l2, mean, maxabs, nonfinite) = digest_and_stats(array, dtype)
        samples = sample_digests(array, dtype) if per_sample and array.ndim >= 1 else None
        value = None
        storage = STORAGE.get(dtype)
        if storage is not None and keep_value is not False:
            nbytes = array.nbytes
            small = array.size <= self.value_threshold and self.value_bytes + nbytes <= self.value_budget
            if keep_value or small:
                stored: np.ndarray | None = array
                if array.dtype.str != storage:
                    stored = array.view(storage) if array.dtype.itemsize == np.dtype(storage).itemsize else None
                if stored is not None:
                    value = stored.tobytes()  # small by construction: the copy is cheap
                    self.value_bytes += nbytes
        with self._lock:
            self._check_open()
            if self._open_step is None:
                self._db.execute("BEGIN")
                self._open_step = step
            elif step != self._open_step:
                raise UsageError(f"trace {self.path}: event for step {step} while step {self._open_step} "
                                 "is not committed; call commit_step first")
            index = self._next_index.get(step, 0)
            self._next_index[step] = index + 1
            self._db.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (step, index, phase, name, dtype, json.dumps(list(shape)), h,
                 _sql_float(l2), _sql_float(mean), _sql_float(maxabs), nonfinite, value, samples))
        return Event(step, index, phase, name, dtype, shape, h, l2, mean, maxabs, nonfinite,
                     value is not None, _split_digests(samples))

    def commit_step(self, step: int) -> None:
        """Commit ``step``: from now on it survives a crash of this process."""
        with self._lock:
            self._check_open()
            if self._open_step is None:
                self._db.execute("BEGIN")
            elif step != self._open_step:
                raise UsageError(f"trace {self.path}: commit_step({step}) while step {self._open_step} is open")
            self._db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                             (step, self._next_index.get(step, 0), time.time()))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'value_bytes'", (str(self.value_bytes),))
            self._db.execute("COMMIT")
            self._open_step = None

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-ready ``value`` under ``key`` in the trace's meta table (committed now)."""
        with self._lock:
            self._check_open()
            text = json.dumps(to_jsonable(value), sort_keys=True)
            # Outside a step this commits at once; inside one, with the step.
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"x.{key}", text))

    def set_status(self, status: str) -> None:
        """Record ``status`` now (committed with the open step, or at once when none is open)."""
        if status not in STATUSES:
            raise UsageError(f"unknown trace status {status!r}; use one of {', '.join(STATUSES)}")
        with self._lock:
            self._check_open()
            self.status = status
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'status'", (status,))

    def value(self, event: Event) -> np.ndarray | None:
        """The stored value of one of this trace's committed events (see ``Trace.value``)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM events WHERE step = ? AND idx = ?",
                                   (event.step, event.index)).fetchone()
        return None if row is None or row[0] is None else _decode(row[0], event.dtype, event.shape, self.path)

    def close(self, status: str = "complete", meta: dict[str, Any] | None = None) -> None:
        """Mark the trace ``status`` and close it. An uncommitted step is dropped; ``meta`` (key: JSON
        value) is stored as by ``set_meta``, after that."""
        if self.closed:
            return
        if status not in STATUSES:
            raise UsageError(f"unknown trace status {status!r}; use one of {', '.join(STATUSES)}")
        with self._lock:
            if self._open_step is not None:
                self._db.execute("ROLLBACK")
                self._open_step = None
            for key, value in (meta or {}).items():   # as set_meta does (its lock is held here)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 (f"x.{key}", json.dumps(to_jsonable(value), sort_keys=True)))
            self.status = status
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'status'", (status,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('closed', ?)", (f"{time.time():.3f}",))
            with contextlib.suppress(sqlite3.Error):  # another reader may hold the log open
                self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.close()
            self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError(f"trace {self.path} is already closed")

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.close("failed" if exc_type is not None else "complete")


def _sql_float(x: float) -> float | None:
    # SQLite stores NaN as NULL anyway; make it explicit.
    return None if math.isnan(x) else x


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


_EVENT_COLS = ("step, idx, phase, name, dtype, shape, digest, l2, mean, maxabs, nonfinite, value IS NOT NULL, "
               "sample_digests")


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
        if step is None:
            rows = self._query(f"SELECT {_EVENT_COLS} FROM events WHERE step IN (SELECT step FROM steps) "
                               "ORDER BY step, idx")
        else:
            rows = self._query(f"SELECT {_EVENT_COLS} FROM events WHERE step = ? "
                               "AND step IN (SELECT step FROM steps) ORDER BY idx", (step,))
        return [_event(r, self.path) for r in rows]

    def event_counts(self) -> dict[int, dict[str, int]]:
        """``{step: {phase: number of events}}`` of the committed steps, in one query."""
        out: dict[int, dict[str, int]] = {s: {} for s in self.steps()}
        for step, phase, n in self._query("SELECT step, phase, COUNT(*) FROM events WHERE step IN "
                                          "(SELECT step FROM steps) GROUP BY step, phase"):
            out.setdefault(int(step), {})[str(phase)] = int(n)
        return out

    def value(self, event: Event) -> np.ndarray | None:
        """The kept value of ``event`` as a read-only array, or None when it was not kept.

        Dtypes NumPy lacks come back as their raw bits (bfloat16 as int16, float8 as uint8).
        """
        if not event.has_value:
            return None
        rows = self._query("SELECT value FROM events WHERE step = ? AND idx = ?", (event.step, event.index))
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


