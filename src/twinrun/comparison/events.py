"""Comparing events: how two events of one kind differ (counts, ULPs), and the first divergence in a step.

:func:`first_divergence` is the one function that finds where two runs part within a step: the
recorder uses it live (``--against``), ``diff`` offline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..trace import PHASES, RAW_DTYPES, Event, as_float
from .model import Divergence, EventDesc, EventStats, Samples, Structural, StructuralKind

__all__ = ["StepScan", "ValueGetter", "divergence_of", "event_difference", "first_divergence", "scan_step"]

ValueGetter = Callable[[Event], "np.ndarray | None"]


# --- one pair of events ---------------------------------------------------------------------------

def _bits(values: np.ndarray) -> np.ndarray:
    """Unsigned integer view of the raw bits, one per element (complex: one per component)."""
    v = np.ascontiguousarray(values)
    if v.dtype.kind == "c":
        v = v.view(np.dtype(f"<f{v.dtype.itemsize // 2}"))
    return v.view(np.dtype(f"<u{v.dtype.itemsize}")) if v.dtype.itemsize > 1 else v.view(np.uint8)


def _ordered(bits: np.ndarray) -> np.ndarray:
    """Sign-magnitude float bits mapped to integers whose difference counts ULPs (+0 == -0)."""
    width = bits.dtype.itemsize * 8
    b = bits.astype(np.uint64)
    sign = (b >> np.uint64(width - 1)).astype(bool)
    mag = (b & np.uint64((1 << (width - 1)) - 1)).astype(object if width == 64 else np.int64)
    return np.where(sign, -mag, mag)


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "complex")) or dtype in RAW_DTYPES


def event_difference(a: Event, b: Event, va: np.ndarray | None = None, vb: np.ndarray | None = None) -> Divergence:
    """How two events of the same kind differ: counts, max absolute/relative difference, ULPs.

    ``va``/``vb`` are their stored values (``Trace.value``); without them only the stats are
    compared and the counts are None.
    """
    out = Divergence(step=a.step, index=a.index, phase=a.phase, name=a.name, shape=list(a.shape), dtype=a.dtype,
                     size=a.size, digest_a=a.digest, digest_b=b.digest,
                     stats_a=EventStats.of(a), stats_b=EventStats.of(b))
    if a.phase == "input" and a.sample_digests is not None and b.sample_digests is not None:
        sa, sb = a.sample_digests, b.sample_digests
        ca, cb = Counter(sa), Counter(sb)
        out.input_order_only = ca == cb and sa != sb
        out.samples = Samples(count=len(sa),
                              moved=sum(1 for x, y in zip(sa, sb) if x != y),   # positions holding another sample
                              changed=sum((ca - cb).values()))                  # samples of A that B lacks
    if va is None or vb is None or va.shape != vb.shape or va.dtype != vb.dtype:
        return out
    out.values = True
    bits_a, bits_b = _bits(va).reshape(-1), _bits(vb).reshape(-1)
    ne = bits_a != bits_b
    if va.dtype.kind == "c":
        ne = ne.reshape(-1, 2).any(axis=1)
    out.differing = int(np.count_nonzero(ne))
    fa, fb = as_float(va, a.dtype), as_float(vb, b.dtype)
    if fa is not None and fb is not None and out.differing:
        x = fa.reshape(-1).astype(np.float64)[ne]
        y = fb.reshape(-1).astype(np.float64)[ne]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            d = np.abs(x[ok] - y[ok])
            scale = np.maximum(np.abs(x[ok]), np.abs(y[ok]))
            out.max_abs = float(d.max())
            rel = np.divide(d, scale, out=np.zeros_like(d), where=scale > 0)
            out.max_rel = float(rel.max())
    elif out.differing == 0:
        out.max_abs = out.max_rel = 0.0
    if _is_float(a.dtype) and va.dtype.kind != "c":
        if out.differing:
            oa, ob = _ordered(bits_a[ne]), _ordered(bits_b[ne])
            if fa is not None and fb is not None:  # NaN has no distance in ULPs
                keep = ~(np.isnan(fa.reshape(-1)[ne]) | np.isnan(fb.reshape(-1)[ne]))
                oa, ob = oa[keep], ob[keep]
            out.max_ulp = int(max(abs(int(p) - int(q)) for p, q in zip(oa.tolist(), ob.tolist()))) if len(oa) else None
        else:
            out.max_ulp = 0
    return out


def _structural(step: int, index: int, a: Event | None, b: Event | None) -> Structural:
    if a is None or b is None:
        kind = StructuralKind.MISSING_EVENT
    elif (a.phase, a.name) != (b.phase, b.name):
        kind = StructuralKind.OTHER_EVENT
    elif a.shape != b.shape:
        kind = StructuralKind.OTHER_SHAPE
    else:
        kind = StructuralKind.OTHER_DTYPE
    return Structural(kind, step, index, EventDesc.of(a), EventDesc.of(b))


# --- one step -------------------------------------------------------------------------------------

@dataclass
class StepScan:
    """One pass over a step's two event lists."""

    events: int = 0                                  # pairs of the same kind, compared
    first: tuple[Event, Event] | None = None         # the first pair whose digests differ
    before: set[str] = field(default_factory=set)    # phases of the identical events before it
    differing: int = 0
    params: list[tuple[Event, Event]] = field(default_factory=list)
    structural: Structural | None = None


def scan_step(events_a: Sequence[Event], events_b: Sequence[Event]) -> StepScan:
    scan = StepScan()
    for i in range(max(len(events_a), len(events_b))):
        x = events_a[i] if i < len(events_a) else None
        y = events_b[i] if i < len(events_b) else None
        if x is None or y is None or not x.same_kind(y):
            scan.structural = _structural((x or y).step, i, x, y)  # type: ignore[union-attr]
            break
        scan.events += 1
        if x.phase == "param":
            scan.params.append((x, y))
        if x.digest != y.digest:
            scan.differing += 1
            if scan.first is None:
                scan.first = (x, y)
        elif scan.first is None:
            scan.before.add(x.phase)
    return scan


def divergence_of(scan: StepScan, value_a: ValueGetter, value_b: ValueGetter, before: Iterable[str]) -> Divergence:
    assert scan.first is not None
    x, y = scan.first
    d = event_difference(x, y, value_a(x) if x.has_value else None, value_b(y) if y.has_value else None)
    seen = set(before) | scan.before
    d.before_identical = True
    d.before_checked = [str(p) for p in PHASES if p in seen]
    return d


def first_divergence(events_a: Sequence[Event], events_b: Sequence[Event], value_a: ValueGetter,
                     value_b: ValueGetter, *, before: Iterable[str] = ()) -> Divergence | Structural | None:
    """The first difference between two event lists of one step, or None when they are identical.

    A numeric difference comes back as a :class:`Divergence` (``before``: the phases of identical
    events in earlier steps), an event missing or of another kind as a :class:`Structural`.
    """
    scan = scan_step(events_a, events_b)
    if scan.first is not None:
        return divergence_of(scan, value_a, value_b, before)
    return scan.structural


