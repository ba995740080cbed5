"""Writing a trace: ``TraceWriter``, one committed SQLite transaction per step (schema 2, ``schema.py``).

The open step is held in memory (its rows, its packed row, its kept values as one blob) and written
by ``commit_step`` in one transaction: a step not committed is lost at a crash either way, and one
``executemany`` costs a fraction of an ``execute`` per event. A run killed mid-way leaves a trace
readable up to its last committed step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._artifacts import Kind, replace_in_place
from .._errors import UsageError
from .._format import to_jsonable
from .._sqlite import DEFAULT_MAX_VALUE_BYTES
from .batch import Pending
from .digest import STORAGE, contiguous, digest_and_stats, dtype_name, sample_digests
from .events import PHASES, STATUSES, Event
from .schema import (
    FORMAT,
    SCHEMA_VERSION,
    SCHEMAS,
    Packer,
    packed_value_offset,
    shape_json,
    split_digests,
    sql_float,
    step_summary,
    summary_part,
    value_nbytes,
)

__all__ = ["DEFAULT_VALUE_BUDGET", "DEFAULT_VALUE_THRESHOLD", "TraceWriter"]

# Values are kept for tensors of at most this many elements (a 10x2048 classifier weight fits, so
# its first divergence can be shown value by value) ...
DEFAULT_VALUE_THRESHOLD = 65_536
# ... and while the trace's kept values stay within this many bytes.
DEFAULT_VALUE_BUDGET = 64 * 2**20

# A step's kept values are one blob, which a reader refuses beyond SQLite's length limit
# (twinrun._sqlite.DEFAULT_MAX_VALUE_BYTES): values past it are not kept, whatever the budget.
MAX_STEP_VALUE_BYTES = DEFAULT_MAX_VALUE_BYTES

_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


class TraceWriter:
    """Writes one trace file; every ``commit_step`` is a committed SQLite transaction.

    ``value_threshold`` (elements) and ``value_budget`` (bytes) bound which values are kept.
    An existing trace at ``path`` is replaced (with its ``-wal``/``-shm``); any other file there, and
    the ``protected`` ``(label, path)`` pairs (the script, the ``--against`` reference), are refused
    with a one-line ``UsageError`` (``twinrun._artifacts.replace_in_place``).
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *,
                 value_threshold: int = DEFAULT_VALUE_THRESHOLD, value_budget: int = DEFAULT_VALUE_BUDGET,
                 protected: Iterable[tuple[str, str | os.PathLike[str] | None]] = ()):
        self.path = Path(path)
        self.value_threshold = int(value_threshold)
        self.value_budget = int(value_budget)
        self.value_bytes = 0
        self.status = "running"
        self._next_index: dict[int, int] = {}
        self._open_step: int | None = None
        # The open step until commit_step writes it: rows of events, the packed row, the summary's
        # parts, the kept values (one blob) and meta updates to commit with it.
        self._rows: list[tuple[Any, ...]] = []
        self._packed: Packer | None = None
        self._summary: list[str] = []
        self._values = bytearray()
        self._meta_updates: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self.closed = False
        try:
            header_json = json.dumps(header, sort_keys=True, allow_nan=False, default=to_jsonable)
        except (TypeError, ValueError) as e:
            raise UsageError(f"trace header for {self.path} is not JSON-ready: {e}") from None
        replace_in_place(self.path, Kind.TRACE, protected=protected)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise UsageError(f"cannot write trace {self.path}: {e}") from None
        # 64 KiB pages: a step's kept values are one blob of up to megabytes, and every page of it is
        # a frame of the log (with its header and checksum) and then a copy at the checkpoint;
        # 4 KiB pages cost twice the CPU per byte written (issue 16, benchmarks/README.md).
        self._db.execute("PRAGMA page_size=65536")
        # WAL: a commit appends to the log; a SIGKILL after it loses nothing (the OS holds the
        # bytes). close() folds the log back so a finished trace is a single file.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN")
        for stmt in filter(str.strip, SCHEMAS[SCHEMA_VERSION].split(";")):
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
        dtype = dtype or dtype_name(array.dtype)
        shape = tuple(int(s) for s in array.shape)
        if same_as is not None and same_as.dtype == dtype and tuple(same_as.shape) == shape:
            # The very tensor of an earlier event, unchanged (e.g. a Sequential's output is its last
            # child's): reuse digest and stats instead of reading it again.
            h, l2, mean, maxabs, nonfinite = (same_as.digest, same_as.l2, same_as.mean, same_as.maxabs,
                                               same_as.nonfinite)
        else:
            h, (l2, mean, maxabs, nonfinite) = digest_and_stats(array, dtype)
        samples = sample_digests(array, dtype) if per_sample and array.ndim >= 1 else None
        value = self._keep(array, dtype, keep_value)
        with self._lock:
            self._open(step)
            index = self._next_index.get(step, 0)
            self._next_index[step] = index + 1
            offset = None
            if value is not None:
                offset = len(self._values)
                self._values += value   # copied now: the tensor may change after this call
            shape_text = shape_json(shape)
            self._rows.append((step, index, phase, name, dtype, shape_text, h, sql_float(l2), sql_float(mean),
                               sql_float(maxabs), nonfinite, offset, samples))
            self._summary.append(summary_part(phase, name, dtype, shape_text, h))
        return Event(step, index, phase, name, dtype, shape, h, l2, mean, maxabs, nonfinite,
                     value is not None, split_digests(samples))

    def _keep(self, array: np.ndarray, dtype: str, keep_value: bool | None) -> Any:
        """The bytes of ``array`` to keep (a buffer, counted against the budget), or None."""
        storage = STORAGE.get(dtype)
        if storage is None or keep_value is False:
            return None
        nbytes = array.nbytes
        if not (keep_value or (array.size <= self.value_threshold and self.value_bytes + nbytes <= self.value_budget)):
            return None
        if len(self._values) + nbytes > MAX_STEP_VALUE_BYTES:   # even when forced: the reader would refuse it
            return None
        if array.dtype.str != storage:
            if array.dtype.itemsize != np.dtype(storage).itemsize:
                return None
            array = array.view(storage)
        self.value_bytes += nbytes
        return array.data

    def _open(self, step: int) -> None:
        self._check_open()
        if self._open_step is None:
            self._open_step = step
        elif step != self._open_step:
            raise UsageError(f"trace {self.path}: event for step {step} while step {self._open_step} "
                             "is not committed; call commit_step first")

    def append_step(self, step: int, pending: list[Pending], arena: bytearray, *, want_events: bool,
                    adopt: bool = True) -> list[Event]:
        """Add the finished events of a ``StepBatch`` (``take()``) to the open ``step``, in program order.
        Returns their Events when ``want_events`` (a live comparison needs them), else [].

        The small float32 events go into the step's packed row, the others into rows. With ``adopt``,
        the arena becomes the step's value blob as it is when every small value is kept and nothing
        else of the step is (the usual case: no copy). Only then: a bytearray must not grow once views
        of it were handed out, and one of them may live on until the garbage collector runs.
        """
        with self._lock:
            self._open(step)
            n_arena = sum(4 * e.size for e in pending if e.offset >= 0 and e.source is None)
            budget_left = min(self.value_budget - self.value_bytes, MAX_STEP_VALUE_BYTES - len(self._values))
            threshold = self.value_threshold
            in_place = False
            if adopt and n_arena and not self._values and n_arena <= budget_left and all(
                    e.size <= threshold if e.offset >= 0 else e.value is None for e in pending):
                self._values = arena
                self.value_bytes += n_arena
                budget_left -= n_arena
                in_place = True
            values = self._values
            index = self._next_index.get(step, 0)
            rows, summary = self._rows, self._summary
            packed = self._packed
            if packed is None:
                packed = self._packed = Packer()
            events = []
            for e in pending:
                digest = e.digest
                assert digest is not None
                l2, mean, maxabs, nonfinite = e.stats
                off: int | None = None
                if e.offset >= 0:
                    src = e.source
                    if in_place:
                        off = e.offset
                    elif e.size <= threshold and 4 * e.size <= budget_left:   # as if it were stored again
                        if src is not None and src.value is not None:
                            off = src.value
                        else:
                            off = len(values)
                            values += memoryview(arena)[e.offset:e.offset + 4 * e.size]
                            budget_left -= 4 * e.size
                            self.value_bytes += 4 * e.size
                    e.value = off
                elif e.value is not None:
                    if len(e.value) <= budget_left:
                        off = len(values)
                        values += e.value
                        budget_left -= len(e.value)
                        self.value_bytes += len(e.value)
                    e.value = off
                shape_text = shape_json(e.shape)
                summary.append(summary_part(e.phase, e.name, e.dtype, shape_text, digest))
                if e.offset >= 0:   # a small float32 tensor: into the step's packed row
                    packed.add(index, e.phase, e.name, shape_text, digest, l2, mean, maxabs, nonfinite, off)
                else:
                    rows.append((step, index, e.phase, e.name, e.dtype, shape_text, digest, sql_float(l2),
                                 sql_float(mean), sql_float(maxabs), nonfinite, off, e.samples))
                if want_events:
                    events.append(Event(step, index, e.phase, e.name, e.dtype, tuple(e.shape), digest, l2, mean,
                                        maxabs, nonfinite, off is not None, split_digests(e.samples)))
                index += 1
            self._next_index[step] = index
        return events

    def commit_step(self, step: int) -> None:
        """Commit ``step``: from now on it survives a crash of this process."""
        with self._lock:
            self._check_open()
            if self._open_step is not None and step != self._open_step:
                raise UsageError(f"trace {self.path}: commit_step({step}) while step {self._open_step} is open")
            rows = self._rows
            packed = self._packed if self._packed is not None and self._packed.idx else None
            phases = {r[2] for r in rows} | (packed.phases() if packed is not None else set())
            db = self._db
            db.execute("BEGIN")
            try:
                if rows:
                    db.executemany(_INSERT_EVENT, rows)
                if packed is not None:
                    db.execute("INSERT OR REPLACE INTO packed VALUES (?,?,?,?,?,?,?,?,?,?)", packed.row(step))
                if self._values:
                    db.execute("INSERT OR REPLACE INTO step_values VALUES (?, ?)", (step, self._values))
                db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)",
                           (step, self._next_index.get(step, 0), time.time(), step_summary(self._summary),
                            ",".join(p for p in PHASES if p in phases)))
                db.execute("UPDATE meta SET value = ? WHERE key = 'value_bytes'", (str(self.value_bytes),))
                for sql, params in self._meta_updates:
                    db.execute(sql, params)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            finally:
                self._drop_open_step()

    def _drop_open_step(self) -> None:
        self._rows, self._values, self._meta_updates = [], bytearray(), []
        self._packed, self._summary = None, []
        self._open_step = None

    def _meta_update(self, sql: str, params: tuple[Any, ...]) -> None:
        # Inside an open step a meta update is committed with the step (as the status of a run that
        # diverged at that step must be); outside one, at once.
        if self._open_step is not None:
            self._meta_updates.append((sql, params))
        else:
            self._db.execute(sql, params)

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-ready ``value`` under ``key`` in the trace's meta table (committed now, or with
        the open step)."""
        with self._lock:
            self._check_open()
            text = json.dumps(to_jsonable(value), sort_keys=True)
            self._meta_update("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"x.{key}", text))

    def set_status(self, status: str) -> None:
        """Record ``status`` now (committed with the open step, or at once when none is open)."""
        if status not in STATUSES:
            raise UsageError(f"unknown trace status {status!r}; use one of {', '.join(STATUSES)}")
        with self._lock:
            self._check_open()
            self.status = status
            self._meta_update("UPDATE meta SET value = ? WHERE key = 'status'", (status,))

    def value(self, event: Event) -> np.ndarray | None:
        """The stored value of one of this trace's committed events (see ``Trace.value``)."""
        with self._lock:
            def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                return self._db.execute(sql, params).fetchall()

            got = query("SELECT value_off FROM events WHERE step = ? AND idx = ?", (event.step, event.index))
            offset = got[0][0] if got else packed_value_offset(query, event, self.path)
            if offset is None:
                return None
            nbytes = value_nbytes(event)
            blob = query("SELECT substr(data, ?, ?) FROM step_values WHERE step = ?", (offset + 1, nbytes, event.step))
        storage = STORAGE.get(event.dtype)
        if not blob or storage is None or len(blob[0][0]) != nbytes:
            return None
        return np.frombuffer(blob[0][0], dtype=np.dtype(storage)).reshape(event.shape)

    def close(self, status: str = "complete", meta: dict[str, Any] | None = None) -> None:
        """Mark the trace ``status`` and close it. An uncommitted step is dropped; ``meta`` (key: JSON
        value) is stored as by ``set_meta``, after that."""
        if self.closed:
            return
        if status not in STATUSES:
            raise UsageError(f"unknown trace status {status!r}; use one of {', '.join(STATUSES)}")
        with self._lock:
            self._drop_open_step()
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
