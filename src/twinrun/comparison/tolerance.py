"""Two traces compared within a tolerance: do they agree to within N ULPs or a relative difference?

Bitwise equality is twinrun's verdict (``diff``); a tolerance is for the other question a test asks
across machines whose kernels differ in the last bits: "did anything change by more than this?".
Structure is never tolerated (an event missing or of another kind fails), nor are differences in
integer tensors (labels, indices). An element passes when it is within ``ulps`` ULPs of the other
run's, or (``rtol``) when ``|a - b| <= rtol * max(|a|, |b|)``; with both given, either suffices.
An event whose values were not kept in the trace (too large for the value budget) and whose digests
differ cannot be checked: that is reported as such, never as a pass.

>>> tol = Tolerance.create(ulps={"grad": 8, "param": 4})        # other phases: exact
>>> check = within_tolerance("a.trace", "b.trace", tol)          # doctest: +SKIP
>>> check.passed, check.sentence()                               # doctest: +SKIP
(False, 'The runs differ beyond the tolerance at step 2, in the backward pass, at ...')
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import UsageError
from .._format import fmt_count, fmt_float
from ..trace import PHASES, Event, Trace, as_float
from .events import _bits, _is_float, _ordered, scan_step
from .model import Structural, StructuralKind, phase_words

__all__ = ["Miss", "Tolerance", "ToleranceCheck", "within_tolerance"]

Spec = int | float | Mapping[str, int | float] | None


def _per_phase(name: str, spec: Spec, *, whole: bool) -> dict[str, float]:
    """``4`` -> every phase 4; ``{"grad": 8}`` -> grad 8 (others absent: exact); validated, one-line errors."""
    if spec is None:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else [(p, spec) for p in PHASES]
    out: dict[str, float] = {}
    for phase, value in items:
        if str(phase) not in PHASES:
            raise UsageError(f"{name}: unknown phase {phase!r}; give a number for every phase or a dict keyed by "
                             f"{', '.join(PHASES)}")
        bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
        if not bad and whole and not float(value).is_integer():
            bad = True
        if bad:
            kind = "a whole number >= 0" if whole else "a finite number >= 0"
            raise UsageError(f"{name} must be {kind} (or a dict of them by phase), not {value!r}")
        out[str(phase)] = float(value)
    return out


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


@dataclass(frozen=True)
class Tolerance:
    """How far two runs may part, per phase: ULPs and/or a relative difference (absent: exact)."""

    ulps: tuple[tuple[str, int], ...] = ()
    rtol: tuple[tuple[str, float], ...] = ()

    @classmethod
    def create(cls, ulps: Spec = None, rtol: Spec = None) -> Tolerance:
        """``ulps=4`` (every phase), ``ulps={"grad": 8}`` (that phase only), ``rtol=1e-6``; validated."""
        u = _per_phase("ulps", ulps, whole=True)
        r = _per_phase("rtol", rtol, whole=False)
        return cls(tuple((p, int(v)) for p, v in u.items()), tuple(r.items()))

    @property
    def exact(self) -> bool:
        return not self.ulps and not self.rtol

    def for_phase(self, phase: str) -> tuple[int | None, float | None]:
        return dict(self.ulps).get(str(phase)), dict(self.rtol).get(str(phase))

    def text(self) -> str:
        """``ulps=4`` / ``ulps: grad 8, param 4; rtol=1e-06``; ``exact`` when nothing is tolerated."""
        parts = []
        for name, items in (("ulps", self.ulps), ("rtol", self.rtol)):
            if not items:
                continue
            values = {v for _, v in items}
            if len(items) == len(PHASES) and len(values) == 1:
                parts.append(f"{name}={_num(items[0][1])}")
            else:
                parts.append(f"{name}: " + ", ".join(f"{p} {_num(v)}" for p, v in items))
        return "; ".join(parts) or "exact"

    def to_dict(self) -> dict[str, Any]:
        return {"ulps": dict(self.ulps), "rtol": dict(self.rtol)}


@dataclass(frozen=True)
class Miss:
    """The first event outside the tolerance, and by how much it missed."""

    step: int
    index: int
    phase: str
    name: str
    dtype: str
    size: int
    reason: str                  # "values" (outside), "not-float" (exact needed), "not-kept" (cannot tell)
    outside: int | None = None   # elements outside the tolerance
    differing: int | None = None
    max_ulp: int | None = None
    max_abs: float | None = None
    max_rel: float | None = None

    def where(self) -> str:
        where, what = phase_words(self.phase)
        if self.phase == "loss":
            return f"at step {self.step}, at the loss `{self.name}`"
        return f"at step {self.step}, {where}, at {what} `{self.name}`"

    def text(self) -> str:
        if self.reason == "not-kept":
            return (f"the {fmt_count(self.size)} values differ but were not kept in the trace, so twinrun cannot "
                    "tell whether they are within the tolerance (record fewer steps or phases, or compare exactly)")
        if self.reason == "not-float":
            return f"{fmt_count(self.differing)} of {fmt_count(self.size)} {self.dtype} values differ (no tolerance " \
                   "applies to integers)"
        text = f"{fmt_count(self.outside)} of {fmt_count(self.size)} values are outside it, by up to "
        if self.max_ulp is not None:
            text += f"{fmt_count(self.max_ulp)} ULP ("
        text += f"max abs {fmt_float(self.max_abs)}, max rel {fmt_float(self.max_rel)}"
        return text + (")" if self.max_ulp is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "index": self.index, "phase": self.phase, "name": self.name, "dtype": self.dtype,
                "size": self.size, "reason": self.reason, "outside": self.outside, "differing": self.differing,
                "max_ulp": self.max_ulp, "max_abs": self.max_abs, "max_rel": self.max_rel}


@dataclass
class ToleranceCheck:
    """Two traces within a tolerance, or the first event (or structural mismatch) outside it."""

    tolerance: Tolerance
    passed: bool
    miss: Miss | None = None
    structural: Structural | None = None
    steps_compared: int = 0
    events_compared: int = 0
    differing_events: int = 0          # events whose digests differ but are within the tolerance
    max_ulp_within: int | None = None
    max_rel_within: float | None = None

    def sentence(self) -> str:
        tol = self.tolerance.text()
        if self.structural is not None:
            return f"{self.structural.text()}; no tolerance applies to structure."
        if self.miss is not None:
            return f"The runs differ beyond the tolerance ({tol}) {self.miss.where()}: {self.miss.text()}."
        if not self.steps_compared:
            return "The traces have no recorded step in common, so nothing could be compared."
        if not self.differing_events:
            return f"The runs are identical: {fmt_count(self.steps_compared)} steps, every digest equal."
        most = []
        if self.max_ulp_within is not None:
            most.append(f"{fmt_count(self.max_ulp_within)} ULP")
        if self.max_rel_within is not None:
            most.append(f"relative {fmt_float(self.max_rel_within)}")
        return (f"The runs agree within the tolerance ({tol}): {fmt_count(self.differing_events)} of "
                f"{fmt_count(self.events_compared)} events differ, by at most {' and '.join(most) or '?'}.")

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance.to_dict(), "passed": self.passed, "sentence": self.sentence(),
                "miss": None if self.miss is None else self.miss.to_dict(),
                "structural": None if self.structural is None else self.structural.to_dict(),
                "steps_compared": self.steps_compared, "events_compared": self.events_compared,
                "differing_events": self.differing_events, "max_ulp_within": self.max_ulp_within,
                "max_rel_within": self.max_rel_within}


def _elements(a: Event, va: np.ndarray, vb: np.ndarray, ulps: int | None,
              rtol: float | None) -> tuple[int, int, int | None, float | None, float | None]:
    """(differing, outside, max ULP, max abs, max rel) over the elements whose bits differ."""
    bits_a, bits_b = _bits(va).reshape(-1), _bits(vb).reshape(-1)
    ne = bits_a != bits_b
    fa, fb = as_float(va, a.dtype), as_float(vb, a.dtype)
    assert fa is not None and fb is not None
    x = fa.reshape(-1).astype(np.float64)[ne]
    y = fb.reshape(-1).astype(np.float64)[ne]
    nan_a, nan_b = np.isnan(x), np.isnan(y)
    both_nan = nan_a & nan_b                     # NaN payloads may differ; both are "not a number"
    one_nan = nan_a ^ nan_b
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(x - y)
        scale = np.maximum(np.abs(x), np.abs(y))
        rel = np.divide(d, scale, out=np.zeros_like(d), where=scale > 0)
    dist = np.abs(np.array([int(p) - int(q) for p, q in zip(_ordered(bits_a[ne]).tolist(),
                                                            _ordered(bits_b[ne]).tolist())], dtype=np.float64))
    ok = np.zeros(len(x), dtype=bool)
    if ulps is not None:
        ok |= dist <= ulps
    if rtol is not None:
        ok |= np.isfinite(d) & (rel <= rtol)
    ok = (ok & ~one_nan) | both_nan
    finite = np.isfinite(d) & ~both_nan
    max_ulp = int(dist[~nan_a & ~nan_b].max()) if (~nan_a & ~nan_b).any() else None
    max_abs = float(d[finite].max()) if finite.any() else None
    max_rel = float(rel[finite].max()) if finite.any() else None
    return int(ne.sum()), int((~ok).sum()), max_ulp, max_abs, max_rel


def within_tolerance(a: Trace | str | os.PathLike[str], b: Trace | str | os.PathLike[str],
                     tolerance: Tolerance) -> ToleranceCheck:
    """Compare two traces event by event, tolerating per-phase ULP or relative differences in floats."""
    from . import captured_phases

    with contextlib.ExitStack() as stack:
        ta = a if isinstance(a, Trace) else stack.enter_context(Trace.open(a))
        tb = b if isinstance(b, Trace) else stack.enter_context(Trace.open(b))
        keep = {str(p) for p in PHASES}
        for cap in (captured_phases(ta), captured_phases(tb)):
            if cap:
                keep &= set(cap)
        common = sorted(set(ta.steps()) & set(tb.steps()))
        out = ToleranceCheck(tolerance, passed=False, steps_compared=len(common))
        if not common:
            out.structural = Structural(StructuralKind.NO_COMMON_STEPS, None, None, None, None)
            return out
        for step in common:
            ea = [e for e in ta.events(step) if e.phase in keep]
            eb = [e for e in tb.events(step) if e.phase in keep]
            scan = scan_step(ea, eb)
            if scan.structural is not None:
                out.structural = scan.structural
                return out
            for x, y in zip(ea, eb):
                out.events_compared += 1
                if x.digest == y.digest:
                    continue
                miss = _check_pair(ta, tb, x, y, tolerance, out)
                if miss is not None:
                    out.miss = miss
                    return out
        out.passed = True
        return out


def _check_pair(ta: Trace, tb: Trace, x: Event, y: Event, tolerance: Tolerance, out: ToleranceCheck) -> Miss | None:
    ulps, rtol = tolerance.for_phase(x.phase)
    base = dict(step=x.step, index=x.index, phase=str(x.phase), name=x.name, dtype=x.dtype, size=x.size)
    va = ta.value(x) if x.has_value else None
    vb = tb.value(y) if y.has_value else None
    if va is None or vb is None:
        return Miss(**base, reason="not-kept")  # type: ignore[arg-type]
    floats = _is_float(x.dtype) and va.dtype.kind != "c" and as_float(va, x.dtype) is not None
    if not floats:
        differing = int(np.count_nonzero(_bits(va).reshape(-1) != _bits(vb).reshape(-1)))
        return Miss(**base, reason="not-float", differing=differing)  # type: ignore[arg-type]
    differing, outside, max_ulp, max_abs, max_rel = _elements(x, va, vb, ulps, rtol)
    if outside:
        return Miss(**base, reason="values", outside=outside, differing=differing,  # type: ignore[arg-type]
                    max_ulp=max_ulp, max_abs=max_abs, max_rel=max_rel)
    out.differing_events += 1
    if max_ulp is not None:
        out.max_ulp_within = max(out.max_ulp_within or 0, max_ulp)
    if max_rel is not None:
        out.max_rel_within = max(out.max_rel_within or 0.0, max_rel)
    return None
