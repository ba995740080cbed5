"""Traces: the ordered stream of events of one run, stored in one SQLite file.

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
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import xxhash

from ._errors import BadTraceError, UsageError

__all__ = [
    "PHASES",
    "SCHEMA_VERSION",
    "STATUSES",
    "DEFAULT_VALUE_THRESHOLD",
    "DEFAULT_VALUE_BUDGET",
    "Event",
    "Recorder",
    "StopRun",
    "Trace",
    "TraceWriter",
    "active_recorder",
    "build_header",
    "digest",
    "record",
    "stats",
]

PHASES = ("init", "input", "forward", "loss", "grad", "param", "metric", "custom")
STATUSES = ("complete", "stopped", "failed", "diverged", "running")
SCHEMA_VERSION = 1
FORMAT = "twinrun-trace"

# Values are kept for tensors of at most this many elements (a 10x2048 classifier weight fits, so
# its first divergence can be shown value by value) ...
DEFAULT_VALUE_THRESHOLD = 65_536
# ... and while the trace's kept values stay within this many bytes.
DEFAULT_VALUE_BUDGET = 64 * 2**20

# dtype name -> how its value is stored (little-endian). Dtypes NumPy lacks are kept as raw
# same-width integer bits, exactly as adapters hand them over (bf16 as int16, float8 as uint8).
_STORAGE = {
    "bool": "|b1",
    "int8": "|i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "|u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
    "complex64": "<c8", "complex128": "<c16",
    "bfloat16": "<i2",
    "float8_e4m3fn": "|u1", "float8_e5m2": "|u1", "float8_e4m3fnuz": "|u1", "float8_e5m2fnuz": "|u1",
}
RAW_DTYPES = frozenset(k for k, v in _STORAGE.items() if v[1] in "iu" and not k.startswith(("int", "uint")))

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


# --- digests and stats ---------------------------------------------------------------------------

def _contiguous(array: np.ndarray) -> np.ndarray:
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":  # digests are of little-endian bytes, as every tensor here is
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


_PREFIXES: dict[tuple[str, tuple[int, ...]], bytes] = {}


def _prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    # The same few shapes recur every step; a dict lookup is cheaper than formatting (or lru_cache).
    key = (dtype, shape)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        if len(_PREFIXES) > 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[key] = f"{dtype}[{','.join(map(str, shape))}]".encode()
    return prefix


def digest(array: np.ndarray, dtype: str | None = None) -> str:
    """128-bit xxh3 of ``dtype`` + shape + the array's bytes, as 32 hex characters.

    The bytes are hashed through the buffer protocol, without a copy (a non-contiguous array is made
    contiguous first). ``dtype`` is the tensor's real dtype name (``"bfloat16"`` for a bf16 tensor
    handed over as its int16 bits); by default the array's own.

    >>> digest(np.zeros(3, np.float32)) == digest(np.zeros(3, np.float64))
    False
    >>> len(digest(np.arange(6).reshape(2, 3)))
    32
    """
    if type(array) is not np.ndarray:
        array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = _contiguous(array)
    h = xxhash.xxh3_128(_prefix(dtype or str(array.dtype), array.shape))
    try:  # asking first (array.flags) costs as much as hashing a small tensor
        h.update(array)
    except ValueError:  # not C-contiguous
        h.update(np.ascontiguousarray(array))
    return h.hexdigest()


def _sample_digests(array: np.ndarray, dtype: str) -> bytes:
    """Binary digests (16 bytes each) of each slice along dim 0."""
    out = bytearray()
    prefix = _prefix(dtype, array.shape[1:])
    for row in array:
        h = xxhash.xxh3_128(prefix)
        if row.size:
            h.update(row)
        out += h.digest()
    return bytes(out)


def _as_float(array: np.ndarray, dtype: str) -> np.ndarray | None:
    """The values as floats (float64 for ints), or None for raw dtypes without a NumPy decoder."""
    if dtype == "bfloat16" and array.dtype.kind in "iu":
        return (array.astype(np.int32) << 16).view(np.float32) if array.dtype.itemsize == 2 else None
    if dtype in RAW_DTYPES and array.dtype.kind in "iu":
        return None  # float8: bits only
    if array.dtype.kind == "c":
        return np.abs(array)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind == "f":
        return array
    try:  # e.g. ml_dtypes' bfloat16 from JAX
        return array.astype(np.float32)
    except (TypeError, ValueError):
        return None


# Stats read every element of every recorded tensor, which makes them most of the cost of tracing.
# Blocks of _CHUNK elements are cast to float64 into a reused buffer (512 KiB: stays in cache, and
# no float64 copy of the whole tensor), then each row of _ROW values is reduced by BLAS ``ddot``:
# the products x*x and x*1 and every addition are float64 operations. Rows are short enough that
# BLAS keeps to the calling thread (OpenBLAS threads ddot only above 10,000 elements): BLAS threads
# started inside the user's training loop crawl when the cores are busy. About 0.45 ns per float32
# element in all, against 0.65 for einsum over the cast chunk (AVX-512 EPYC, one core).
_ROW = 4096
_CHUNK = 16 * _ROW
_local = threading.local()
_ONES = np.ones(_ROW)
_ONES.flags.writeable = False
_rowdot = getattr(np, "vecdot", None)
if _rowdot is None:  # NumPy < 2: no vecdot ufunc; einsum is slower but the same float64 arithmetic
    def _rowdot(a, b, out=None):
        return np.einsum("...i,...i->...", a, b, out=out)


def _cast_buffer() -> np.ndarray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = np.empty(_CHUNK, np.float64)
    return buf


def _sums64(flat: np.ndarray, h=None) -> tuple[float, float, Any, Any]:
    """Sum of squares and sum of a 1-d array, every product and addition in float64, and its
    largest and smallest value. With ``h`` (an xxh3 hash), also feeds it the array's bytes, block
    by block while they are in cache (``flat`` must then be C-contiguous)."""
    n = flat.size
    cast = flat.dtype != np.float64
    if n <= _ROW:
        if h is not None:
            h.update(flat)
        b = flat.astype(np.float64) if cast else flat
        return float(_rowdot(b, b)), float(np.add.reduce(b)), np.maximum.reduce(flat), np.minimum.reduce(flat)
    buf = _cast_buffer() if cast else None
    parts = np.empty((2, -(-n // _ROW)))  # per-row sums of squares and sums, added up at the end
    ends = np.empty((2, -(-n // _CHUNK)), flat.dtype)  # per-block max and min
    j = 0
    for k, i in enumerate(range(0, n, _CHUNK)):
        b = flat[i:i + _CHUNK]
        if h is not None:
            h.update(b)
        ends[0, k], ends[1, k] = np.maximum.reduce(b), np.minimum.reduce(b)
        if cast:
            np.copyto(buf[:b.size], b, casting="unsafe")
            b = buf[:b.size]
        rows = b.size // _ROW
        if rows:
            m = b[:rows * _ROW].reshape(rows, _ROW)
            _rowdot(m, m, out=parts[0, j:j + rows])
            _rowdot(m, _ONES, out=parts[1, j:j + rows])
            j += rows
        if rows * _ROW < b.size:
            tail = b[rows * _ROW:]
            parts[0, j], parts[1, j] = _rowdot(tail, tail), np.add.reduce(tail)
            j += 1
    ss, total = np.add.reduce(parts[:, :j], axis=1)
    return float(ss), float(total), np.maximum.reduce(ends[0]), np.minimum.reduce(ends[1])


def _decoded(array: np.ndarray, dtype: str) -> np.ndarray | None:
    # Integers are cast block by block in _sums64 rather than copied whole to float64.
    return array if array.dtype.kind in "biu" and dtype not in RAW_DTYPES else _as_float(array, dtype)


def _finish(flat: np.ndarray, ss: float, total: float, hi, lo) -> tuple[float, float, float, int]:
    if math.isfinite(ss) and math.isfinite(total):
        # Finite float64 sums mean every value was finite: the count is exactly 0. The max is
        # taken on the values as they are: comparisons round nothing (np.abs would copy).
        return math.sqrt(ss), total / flat.size, max(float(hi), -float(lo)), 0
    finite = np.isfinite(flat)
    nonfinite = int(flat.size - np.count_nonzero(finite))
    good = flat[finite].astype(np.float64)
    if good.size == 0:
        return 0.0, 0.0, 0.0, nonfinite
    # squares of huge finite float64 values overflow; scale by the largest to keep the norm finite
    maxabs = float(np.max(np.abs(good)))
    l2 = maxabs * float(np.sqrt(np.sum((good / maxabs) ** 2))) if maxabs else 0.0
    return l2, float(np.mean(good)), maxabs, nonfinite


def stats(array: np.ndarray, dtype: str | None = None) -> tuple[float, float, float, int]:
    """``(l2, mean, maxabs, nonfinite)`` computed in float64.

    ``l2``, ``mean`` and ``maxabs`` are over the finite values; ``nonfinite`` counts the others
    (NaN, +-inf). Raw dtypes that NumPy cannot decode (float8) give NaN stats.

    >>> stats(np.array([3.0, 4.0, np.nan], np.float32))
    (5.0, 3.5, 4.0, 1)
    """
    array = np.asarray(array)
    x = _decoded(array, dtype or str(array.dtype))
    if x is None:
        return math.nan, math.nan, math.nan, 0
    if x.size == 0:
        return 0.0, 0.0, 0.0, 0
    flat = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # handled in _finish, not the user's business
        return _finish(flat, *_sums64(flat))


def _digest_and_stats(array: np.ndarray, dtype: str) -> tuple[str, tuple[float, float, float, int]]:
    """``(digest(array, dtype), stats(array, dtype))`` of a C-contiguous little-endian array, in
    one pass over its memory when its values need no decoding (a large tensor is read from memory
    once, not twice)."""
    if array.size == 0 or _decoded(array, dtype) is not array:
        return digest(array, dtype), stats(array, dtype)
    h = xxhash.xxh3_128(_prefix(dtype, array.shape))
    flat = array.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = _sums64(flat, h)
        return h.hexdigest(), _finish(flat, *sums)


# --- events --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One recorded tensor: where it sits in the run, what it was (digest), and its stats."""

    step: int
    index: int
    phase: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str
    l2: float
    mean: float
    maxabs: float
    nonfinite: int
    has_value: bool = False
    sample_digests: list[str] | None = None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def same_kind(self, other: "Event") -> bool:
        """Same phase, name, dtype and shape: two events that can be compared number by number."""
        return (self.phase, self.name, self.dtype, self.shape) == (other.phase, other.name, other.dtype, other.shape)

    def to_dict(self) -> dict:
        return {
            "step": self.step, "index": self.index, "phase": self.phase, "name": self.name,
            "dtype": self.dtype, "shape": list(self.shape), "digest": self.digest,
            "l2": _num(self.l2), "mean": _num(self.mean), "maxabs": _num(self.maxabs),
            "nonfinite": self.nonfinite, "has_value": self.has_value,
            "sample_digests": self.sample_digests,
        }


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


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

    def __init__(self, path: str | os.PathLike, header: dict, *,
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
            header_json = json.dumps(header, sort_keys=True, allow_nan=False, default=_json_default)
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
        array = _contiguous(np.asarray(array))
        dtype = dtype or str(array.dtype)
        shape = tuple(int(s) for s in array.shape)
        if same_as is not None and same_as.dtype == dtype and tuple(same_as.shape) == shape:
            # The very tensor of an earlier event, unchanged (e.g. a Sequential's output is its last
            # child's): reuse digest and stats instead of reading it again.
            h, l2, mean, maxabs, nonfinite = (same_as.digest, same_as.l2, same_as.mean, same_as.maxabs,
                                               same_as.nonfinite)
        else:
            h, (l2, mean, maxabs, nonfinite) = _digest_and_stats(array, dtype)
        samples = _sample_digests(array, dtype) if per_sample and array.ndim >= 1 else None
        value = None
        storage = _STORAGE.get(dtype)
        if storage is not None and keep_value is not False:
            nbytes = array.nbytes
            small = array.size <= self.value_threshold and self.value_bytes + nbytes <= self.value_budget
            if keep_value or small:
                stored = array
                if stored.dtype.str != storage:
                    stored = stored.view(storage) if stored.dtype.itemsize == np.dtype(storage).itemsize else None
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
            text = json.dumps(_jsonable(value), sort_keys=True)
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

    def close(self, status: str = "complete", meta: dict | None = None) -> None:
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
                                 (f"x.{key}", json.dumps(_jsonable(value), sort_keys=True)))
            self.status = status
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'status'", (status,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('closed', ?)", (f"{time.time():.3f}",))
            with contextlib.suppress(sqlite3.Error):  # another reader may hold the log open
                self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.close()
            self.closed = True

    def _check_open(self):
        if self.closed:
            raise UsageError(f"trace {self.path} is already closed")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close("failed" if exc_type is not None else "complete")


def _sql_float(x: float) -> float | None:
    # SQLite stores NaN as NULL anyway; make it explicit.
    return None if math.isnan(x) else x


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _jsonable(obj, _depth: int = 0):
    """A JSON-ready copy (non-finite floats as strings), for headers built from other modules."""
    if _depth > 50:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v, _depth + 1) for v in obj]
    converted = _json_default(obj)
    return converted if isinstance(converted, str) else _jsonable(converted, _depth + 1)


# --- reading -------------------------------------------------------------------------------------

def _decode(blob: bytes, dtype: str, shape: tuple[int, ...], path) -> np.ndarray:
    storage = _STORAGE.get(dtype)
    if storage is None:
        raise BadTraceError(f"trace {path} holds a value of dtype {dtype!r}, which twinrun does not read; "
                            "it was written by another program")
    dt = np.dtype(storage)
    count = math.prod(shape)
    if len(blob) != count * dt.itemsize:
        raise BadTraceError(f"trace {path} is corrupt: a {dtype}{list(shape)} value has {len(blob)} bytes; "
                            "record the run again")
    return np.frombuffer(blob, dtype=dt).reshape(shape)


_EVENT_COLS = "step, idx, phase, name, dtype, shape, digest, l2, mean, maxabs, nonfinite, value IS NOT NULL, sample_digests"


def _event(row, path) -> Event:
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

    def __init__(self, path: Path, db: sqlite3.Connection, meta: dict[str, str]):
        self.path = path
        self._db = db
        self._meta = meta
        self.schema_version = int(meta["schema_version"])
        try:
            self.header: dict = json.loads(meta.get("header", "{}"))
        except ValueError:
            raise BadTraceError(f"{path}: the trace header is not valid JSON; record the run again") from None
        self.status: str = meta.get("status", "running")
        self._steps: list[int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Trace":
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
            raise BadTraceError(f"{path} has a bad schema version {meta['schema_version']!r}; record the run again") from None
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

    def iter_steps(self) -> Iterator[tuple[int, list[Event]]]:
        """``(step, events)`` for every committed step, in order."""
        for s in self.steps():
            yield s, self.events(s)

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

    def meta(self, key: str, default=None):
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

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise BadTraceError(f"{self.path} is truncated or corrupt ({e}); record the run again") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Trace({str(self.path)!r}, status={self.status!r}, steps={len(self.steps())})"


def _connect_read(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri()
    # A trace of a killed run keeps its last steps in the -wal file beside it; reading them needs
    # SQLite's shared-memory index, which read-only mode cannot create. Read-write mode is used
    # only when we may write there (query_only stops any write).
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        return sqlite3.connect(f"{uri}?mode=rw", uri=True, check_same_thread=False)
    return sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)


# --- recording -----------------------------------------------------------------------------------

class StopRun(BaseException):
    """Raised by ``Recorder.end_step`` to end the run cleanly: ``reason`` is "max-steps" or "diverged".

    A BaseException, so that a user's ``except Exception`` does not swallow it.
    """

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


_active: list["Recorder"] = []


def active_recorder() -> "Recorder | None":
    """The Recorder of the innermost open recording, or None."""
    return _active[-1] if _active else None


class Recorder:
    """Turns a program's tensors into trace events, step by step.

    ``capture``: phases to record; ``every``: record every Nth step (steps are still counted);
    ``max_steps``: after step ``max_steps - 1`` is committed, raise ``StopRun("max-steps")``;
    ``against``: a reference Trace compared at every ``end_step``, raising ``StopRun("diverged")``
    at the first difference unless ``keep_going``. ``value_threshold`` / ``value_budget`` override the
    writer's (see ``TraceWriter``).

    A repeated ``(phase, name)`` within a step gets a call index: ``features.0``, ``features.0#1``.
    Hooks therefore pass plain names. The recorder is ``active_recorder()`` until closed.
    """

    def __init__(self, writer: TraceWriter, *, capture: Iterable[str] = PHASES, every: int = 1,
                 max_steps: int | None = None, against: "Trace | str | os.PathLike | None" = None,
                 keep_going: bool = False, value_threshold: int | None = None, value_budget: int | None = None):
        capture = (capture,) if isinstance(capture, str) else tuple(capture)
        bad = [p for p in capture if p not in PHASES]
        if bad:
            raise UsageError(f"unknown phase {bad[0]!r} in capture; use some of {', '.join(PHASES)}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a whole number >= 1, not {every!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise UsageError(f"max_steps must be a whole number >= 1, not {max_steps!r}")
        self.writer = writer
        if value_threshold is not None:
            writer.value_threshold = int(value_threshold)
        if value_budget is not None:
            writer.value_budget = int(value_budget)
        self.capture = frozenset(capture)
        self.every = every
        self.max_steps = max_steps
        self.against = Trace.open(against) if against is not None and not isinstance(against, Trace) else against
        self._ref_steps = set(self.against.steps()) if self.against is not None else set()
        self.keep_going = keep_going
        self.step = 0
        self.divergence: dict | None = None
        self.stop_reason: str | None = None
        self.closed = False
        self._events: list[Event] = []
        self._calls: dict[tuple[str, str], int] = {}
        self._adapters: list = []
        self._uninstall: list[Callable[[], None]] = []
        self._hooked: set[str] = set()
        self._lock = threading.RLock()
        writer.set_meta("recorder", {"capture": [p for p in PHASES if p in self.capture], "every": every,
                                     "max_steps": max_steps, "keep_going": keep_going,
                                     "against": str(self.against.path) if self.against is not None else None})
        _active.append(self)

    # --- events ---
    @property
    def recording(self) -> bool:
        """Whether this step is recorded (``every``)."""
        return self.step % self.every == 0

    def wants(self, phase: str) -> bool:
        """Whether an event of ``phase`` now would be recorded; hooks use it to skip work."""
        return not self.closed and phase in self.capture and self.step % self.every == 0

    def event(self, phase: str, name: str, value: Any, *, per_sample: bool = False,
              same_as: Event | None = None) -> Event | None:
        """Record ``value`` (a tensor of any loaded framework, a NumPy array or a number) as an event.

        ``same_as``: an Event of this step recorded from the very same, unchanged tensor; its digest
        and stats are reused (hooks use it for a container's output, which is its last child's).
        """
        if phase not in PHASES:
            raise UsageError(f"unknown trace phase {phase!r}; use one of {', '.join(PHASES)}")
        if not self.wants(phase):
            return None
        array, dtype = self._convert(value, name)
        with self._lock:
            key = (phase, name)
            n = self._calls.get(key, 0)
            self._calls[key] = n + 1
            ev = self.writer.add(self.step, phase, name if n == 0 else f"{name}#{n}", array,
                                 dtype=dtype, per_sample=per_sample, same_as=same_as)
            self._events.append(ev)
        return ev

    def _convert(self, value: Any, name: str) -> tuple[np.ndarray, str]:
        if isinstance(value, np.ndarray):
            return value, str(value.dtype)
        for refresh in (False, True):
            if refresh or not self._adapters:
                from . import frameworks
                self._adapters = [a for a in frameworks.loaded() if a.name != "numpy"]
            for adapter in self._adapters:
                if adapter.is_tensor(value):
                    return adapter.to_numpy(value), adapter.dtype_name(value)
        if isinstance(value, (bool, int, float, np.generic)):
            arr = np.asarray(value)
            return arr, str(arr.dtype)
        raise UsageError(f"cannot record {name!r}: a {type(value).__name__} is not a tensor of a loaded "
                         "framework, a NumPy array or a number")

    # --- steps ---
    def end_step(self) -> None:
        """End the current step: commit it, compare it with ``against``, and count it.

        Raises ``StopRun("diverged")`` at the first divergence (unless ``keep_going``) and
        ``StopRun("max-steps")`` once ``max_steps`` steps have ended.
        """
        with self._lock:
            if self.closed:
                return
            step = self.step
            events, self._events, self._calls = self._events, [], {}
            if self.recording:
                self.writer.commit_step(step)
                if self.against is not None and self.divergence is None and step in self._ref_steps:
                    found = self._compare_step(step, events)
                    if found is not None:
                        self.divergence = found
                        self.writer.set_meta("divergence", found)
                        self.writer.set_status("diverged")
                        if not self.keep_going:
                            self.stop_reason = "diverged"
                            raise StopRun("diverged", f"diverged from {self.against.path} at step {step}")
            self.step = step + 1
            if self.max_steps is not None and self.step >= self.max_steps:
                self.stop_reason = "max-steps"
                if self.writer.status == "running":
                    self.writer.set_status("stopped")
                raise StopRun("max-steps", f"stopped after {self.step} steps (max_steps)")

    def _compare_step(self, step: int, events: list[Event]) -> dict | None:
        from .compare import first_difference_in_step

        # Compare only the phases both runs capture, as compare() does.
        ref_capture = (self.against.meta("recorder") or {}).get("capture") or PHASES
        keep = self.capture & set(ref_capture)
        return first_difference_in_step([e for e in events if e.phase in keep],
                                        [e for e in self.against.events(step) if e.phase in keep],
                                        self.writer.value, self.against.value, earlier_identical=True)

    # --- hooks ---
    def install_hooks(self) -> None:
        """Install the recording hooks of every loaded framework, and of frameworks imported later."""
        from . import frameworks

        for name in frameworks.NAMES:
            top = frameworks._REGISTRY[name][0]
            frameworks.when_imported(top, lambda _mod, _name=name: self._hook(_name))

    def _hook(self, name: str) -> None:
        if self.closed or name in self._hooked:
            return
        from . import frameworks

        self._hooked.add(name)
        self._uninstall.append(frameworks.get(name).install(self))

    def close(self, status: str | None = None) -> None:
        """Uninstall hooks and close the trace.

        ``status`` defaults to "stopped" after ``max_steps``, "diverged" after a divergence from
        ``against`` (also with ``keep_going``), else "complete".
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            while self._uninstall:
                with contextlib.suppress(Exception):  # a failed unhook must not hide the run's result
                    self._uninstall.pop()()
            if self in _active:
                _active.remove(self)
            if status is None or status == "complete":
                if self.divergence is not None:
                    status = "diverged"
                elif self.stop_reason == "max-steps":
                    status = "stopped"
                else:
                    status = status or "complete"
            self.writer.close(status, meta={"frameworks": loaded_frameworks()})


def loaded_frameworks() -> list[str]:
    """The frameworks the program has used, by twinrun's names (plus ``keras``); a trace stores them
    at close (``Trace.meta("frameworks")``), so doctor knows which kernels a run used."""
    from . import frameworks

    names = [n for n in frameworks.NAMES if frameworks.is_loaded(n)]
    if "jax" in names:   # Keras 3 imports JAX whatever its backend: count JAX only once it computed
        try:
            from .frameworks.jax import backend_started

            if not backend_started():
                names.remove("jax")
        except Exception:  # noqa: BLE001 - keep it listed when unsure
            pass
    return names + (["keras"] if "keras" in sys.modules else [])


def build_header(extra: dict | None = None) -> dict:
    """The trace header: twinrun's version, the command, seeds, determinism settings, environment.

    Modules that are not available yet, or fail, leave their entry None rather than stopping a run.
    """
    from . import __version__

    header: dict[str, Any] = {
        "twinrun": __version__,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "python": sys.version.split()[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": None,
        "determinism": None,
        "env": None,
    }
    with contextlib.suppress(Exception):
        from . import seeding

        seeds = seeding.current()
        header["seeds"] = _jsonable(seeds.to_dict()) if seeds is not None else None
    with contextlib.suppress(Exception):
        from . import determinism

        current = getattr(determinism, "current_settings", None)
        header["determinism"] = _jsonable(current()) if current is not None else None
    with contextlib.suppress(Exception):
        from . import env

        header["env"] = _jsonable(env.capture())
    if extra:
        header.update(_jsonable(extra))
    return header


@contextlib.contextmanager
def record(path: str | os.PathLike, *, header: dict | None = None, value_threshold: int = DEFAULT_VALUE_THRESHOLD,
           value_budget: int = DEFAULT_VALUE_BUDGET, **recorder_options):
    """Record everything the program computes inside the block into the trace at ``path``.

    Hooks the frameworks already imported and those imported inside the block. ``max_steps`` and
    ``against`` end the block early and cleanly (``StopRun`` is caught here). Other options are
    ``Recorder``'s. Yields the Recorder.

    >>> with record("run.trace", max_steps=50):      # doctest: +SKIP
    ...     train()
    """
    writer = TraceWriter(path, build_header(header), value_threshold=value_threshold, value_budget=value_budget)
    try:
        recorder = Recorder(writer, **recorder_options)
    except BaseException:
        writer.close("failed")
        raise
    try:
        recorder.install_hooks()
        yield recorder
    except StopRun:
        recorder.close()
    except BaseException:
        recorder.close("failed")
        raise
    else:
        recorder.close()
