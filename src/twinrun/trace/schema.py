"""The trace file's format: its SQLite tables by schema version, and the encodings both the writer and
the reader use (the packed row of a step's small events, the step summary, where a kept value lies).

Schema 2 (written now):

- ``meta``: key/value text (``format``, ``schema_version``, ``header``, ``status``, ...);
- ``steps``: one row per committed step: its event count, commit time, ``summary`` (one digest of
  its events in order, see :func:`step_summary`) and ``phases`` (comma-separated, in phase order);
- ``events``: one row per event that is not packed (big tensors, other dtypes, per-sample digests):
  where it is (step, index), what it is (phase, name, dtype, shape, digest, stats) and, when its value
  was kept, ``value_off``: where its bytes start in the step's blob;
- ``step_values``: the kept values of one step, one blob (``value_off`` points into it);
- ``packed``: the small float32 events a ``Recorder`` finished at the end of one step, one row per
  step instead of one per event (an SQLite row costs about as much as everything else such an event
  needs), see :class:`Packer` and :func:`unpack`.

Schema 1 (read): ``meta``, ``steps`` (step, events, committed) and ``events`` with a ``value`` blob
per event.

>>> step_summary([summary_part("param", "w", "float32", "[3]", "0" * 32)]) == step_summary([])
False
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .._decode import sql_type
from .._errors import BadTraceError
from .digest import STORAGE
from .events import PHASES, Event

__all__ = ["AGAIN", "FORMAT", "PACKED_COLUMNS", "PHASE_CODE", "SCHEMAS", "SCHEMA_VERSION", "Packer", "event_columns",
           "packed_value_offset", "shape_json", "split_digests", "sql_float", "step_summary", "summary_part", "unpack",
           "value_nbytes"]

SCHEMA_VERSION = 2
FORMAT = "twinrun-trace"
# The fix a message about a corrupt trace names.
AGAIN = "record the run again"

SCHEMAS = {
    1: """
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
""",
    2: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE steps (step INTEGER PRIMARY KEY, events INTEGER NOT NULL, committed REAL NOT NULL,
                    summary TEXT, phases TEXT);
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
    value_off INTEGER,
    sample_digests BLOB,
    PRIMARY KEY (step, idx)
) WITHOUT ROWID;
CREATE TABLE step_values (step INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE packed (
    step INTEGER PRIMARY KEY,
    idx BLOB NOT NULL,
    phases BLOB NOT NULL,
    names TEXT NOT NULL,
    shapes TEXT NOT NULL,
    shape_ix BLOB NOT NULL,
    digests TEXT NOT NULL,
    stats BLOB NOT NULL,
    nonfinite BLOB NOT NULL,
    value_off BLOB NOT NULL
);
""",
}

PHASE_CODE = {str(p): i for i, p in enumerate(PHASES)}
_PHASE_NAMES = [str(p) for p in PHASES]


def event_columns(version: int) -> str:
    """The columns of ``events`` that make an Event, the last but one saying whether a value was kept."""
    kept = "value IS NOT NULL" if version < 2 else "value_off IS NOT NULL"
    return f"step, idx, phase, name, dtype, shape, digest, l2, mean, maxabs, nonfinite, {kept}, sample_digests"


def value_nbytes(event: Event) -> int:
    """How many bytes the kept value of ``event`` has (its dtype's storage width times its size)."""
    storage = STORAGE.get(event.dtype)
    return event.size * (np.dtype(storage).itemsize if storage else 1)


# --- shapes and summaries ---------------------------------------------------------------------------

# A cache, not state: json.dumps per event costs microseconds and the same few shapes recur every step.
_SHAPES: dict[tuple[int, ...], str] = {}


def shape_json(shape: tuple[int, ...]) -> str:
    """``shape`` as the JSON list the trace stores."""
    text = _SHAPES.get(shape)
    if text is None:
        if len(_SHAPES) > 4096:
            _SHAPES.clear()
        text = _SHAPES[shape] = json.dumps(list(shape))
    return text


def summary_part(phase: str, name: str, dtype: str, shape: str, digest: str) -> str:
    """What the step summary says of one event (``shape`` as its JSON)."""
    return f"{phase}\0{name}\0{dtype}\0{shape}\0{digest}"


def step_summary(parts: list[str]) -> str:
    """One digest of a step's events (phase, name, dtype, shape and digest of each, in order): two steps
    with equal summaries hold the same events bit for bit, so a comparison may skip them."""
    return xxhash.xxh3_128("\n".join(parts).encode()).hexdigest()


# --- the packed row of a step ------------------------------------------------------------------------
# Per event, little-endian: its index in the step (int32), its phase (uint8, the position in PHASES),
# its name (a JSON list of the step's names), its shape (an int32 index into a JSON list of the step's
# shapes), its digest (32 hex characters, concatenated), l2, mean and max |x| (float64, NaN for none),
# its non-finite count and value offset in the step's blob (int64, -1: not kept). Every event packed is
# float32.

class Packer:
    """The packed row of one step, built event by event (``add``), written by ``row``."""

    __slots__ = ("codes", "digests", "idx", "names", "nonfinite", "offsets", "shape_ix", "shapes", "stats")

    def __init__(self) -> None:
        self.idx: list[int] = []
        self.codes: list[int] = []
        self.names: list[str] = []
        self.shape_ix: list[int] = []
        self.digests: list[str] = []
        self.stats: list[float] = []
        self.nonfinite: list[int] = []
        self.offsets: list[int] = []
        self.shapes: dict[str, int] = {}

    def add(self, index: int, phase: str, name: str, shape: str, digest: str, l2: float, mean: float,
            maxabs: float, nonfinite: int, offset: int | None) -> None:
        self.idx.append(index)
        self.codes.append(PHASE_CODE[phase])
        self.names.append(name)
        ix = self.shapes.get(shape)
        if ix is None:
            ix = self.shapes[shape] = len(self.shapes)
        self.shape_ix.append(ix)
        self.digests.append(digest)
        self.stats += (l2, mean, maxabs)
        self.nonfinite.append(nonfinite)
        self.offsets.append(-1 if offset is None else offset)

    def row(self, step: int) -> tuple[Any, ...]:
        return (step, _bytes(self.idx, "<i4"), bytes(self.codes), json.dumps(self.names),
                "[" + ",".join(self.shapes) + "]", _bytes(self.shape_ix, "<i4"), "".join(self.digests),
                _bytes(self.stats, "<f8"), _bytes(self.nonfinite, "<i8"), _bytes(self.offsets, "<i8"))

    def phases(self) -> set[str]:
        return {_PHASE_NAMES[c] for c in set(self.codes)}


PACKED_COLUMNS = "step, idx, phases, names, shapes, shape_ix, digests, stats, nonfinite, value_off"


def _bytes(values: list[Any], dtype: str) -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


def _array(blob: Any, dtype: str, path: Path) -> np.ndarray:
    if type(blob) is not bytes or len(blob) % np.dtype(dtype).itemsize:
        what = f"a blob of {len(blob)} bytes" if type(blob) is bytes else sql_type(blob)
        raise BadTraceError(f"{path} is corrupt: a packed row holds {what} where twinrun writes {dtype} numbers; "
                            f"{AGAIN}")
    return np.frombuffer(blob, dtype)


def unpack(row: tuple[Any, ...], path: Path) -> list[Event]:
    """The events of one ``packed`` row (in the order they were packed), every column checked as the
    reader checks a row of ``events``: JSON decoded with bounds (``twinrun._decode``), each shape as
    ``decode_shape`` checks one, lengths, phases, indices, counts and offsets in range."""
    step, idx, codes, names, shapes, shape_ix, digests, stats_blob, nonfinite, offsets = row
    bad = f"{path} is corrupt: the packed events of step {step} "
    idx_a = _array(idx, "<i4", path).tolist()
    n = len(idx_a)
    code_a = _array(codes, "|u1", path).tolist()
    ix_a = _array(shape_ix, "<i4", path).tolist()
    st = _array(stats_blob, "<f8", path).tolist()
    nf = _array(nonfinite, "<i8", path).tolist()
    off = _array(offsets, "<i8", path).tolist()
    name_a = _json_list(names, f"the names of the packed events of step {step}", path)
    if not all(type(x) is str for x in name_a):
        raise BadTraceError(bad + f"have a name that is not text; {AGAIN}")
    dims = [_shape(s, bad) for s in _json_list(shapes, f"the shapes of the packed events of step {step}", path)]
    if not (type(digests) is str and len(digests) == 32 * n and len(code_a) == len(name_a) == len(ix_a)
            == len(nf) == len(off) == n and len(st) == 3 * n):
        raise BadTraceError(bad + f"are of mismatched lengths; {AGAIN}")
    if any(c >= len(PHASES) for c in code_a) or any(not 0 <= i < len(dims) for i in ix_a) \
            or any(o < -1 for o in off) or any(x < 0 for x in nf) or any(i < 0 for i in idx_a):
        raise BadTraceError(bad + f"hold a phase, shape, index, count or offset out of range; {AGAIN}")
    return [Event(step, idx_a[i], _PHASE_NAMES[code_a[i]], name_a[i], "float32", dims[ix_a[i]],
                  digests[32 * i:32 * i + 32], st[3 * i], st[3 * i + 1], st[3 * i + 2], nf[i], off[i] >= 0, None)
            for i in range(n)]


def _json_list(raw: Any, what: str, path: Path) -> list[Any]:
    """A JSON list from a packed row, decoded with bounds (length; nesting: the C decoder raises
    RecursionError, caught here). Faster than ``_decode.decode_json``, which measures the nesting first;
    the caller checks every element."""
    if type(raw) is not str:
        raise BadTraceError(f"{path} is corrupt: {what} is {sql_type(raw)}, not JSON text; {AGAIN}")
    if len(raw) > _MAX_JSON_CHARS:
        raise BadTraceError(f"{path} is corrupt: {what} is {len(raw):,} characters long, more than twinrun reads "
                            f"({_MAX_JSON_CHARS:,}); {AGAIN}")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if type(value) is not list:
        raise BadTraceError(f"{path} is corrupt: {what} is not a JSON list; {AGAIN}")
    return value


_MAX_JSON_CHARS = 32 * 2**20
_MAX_NDIM = 32
_MAX_ELEMENTS = 2**48


def _shape(s: Any, bad: str) -> tuple[int, ...]:
    """One shape of a packed row: at most 32 whole numbers >= 0 and 2**48 elements, as
    ``_decode.decode_shape`` requires of a row's shape."""
    if type(s) is not list or len(s) > _MAX_NDIM or not all(type(d) is int and d >= 0 for d in s):
        raise BadTraceError(bad + f"have a shape that is not a list of at most {_MAX_NDIM} whole numbers >= 0; "
                            f"{AGAIN}")
    n = 1
    for d in s:
        n *= d
    if n > _MAX_ELEMENTS:
        raise BadTraceError(bad + f"have a shape {s} of {n:,} elements, more than any real tensor; {AGAIN}")
    return tuple(s)


def packed_value_offset(query: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]], event: Event,
                        path: Path) -> int | None:
    """Where the kept value of a packed ``event`` starts in its step's blob (None: not packed, not kept)."""
    got = query("SELECT idx, value_off FROM packed WHERE step = ?", (event.step,))
    if not got:
        return None
    idx, offs = _array(got[0][0], "<i4", path), _array(got[0][1], "<i8", path)
    where = np.flatnonzero(idx == event.index)
    if where.size == 0 or where[0] >= offs.size or offs[where[0]] < 0:
        return None
    return int(offs[where[0]])


def split_digests(blob: bytes | None) -> list[str] | None:
    """Per-sample digests, stored as 16 bytes each, as hex strings."""
    if blob is None:
        return None
    return [blob[i:i + 16].hex() for i in range(0, len(blob), 16)]


def sql_float(x: float) -> float | None:
    # SQLite stores NaN as NULL anyway; make it explicit.
    return None if math.isnan(x) else x
