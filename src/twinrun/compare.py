"""Two traces side by side: identical, or where they first part and how the difference grows.

Bitwise equality of two events is equality of their digests. The first divergence is the first
event, in order, whose digest differs; an event missing, of another shape, dtype or name is a
structural mismatch, reported as such and never as a numeric divergence.

>>> c = compare("a.trace", "b.trace")        # doctest: +SKIP
>>> print(c.sentence())                       # doctest: +SKIP
The runs part at step 3, in the backward pass, at the gradient of `classifier.weight`: ...
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._errors import StructuralMismatchError
from .trace import PHASES, RAW_DTYPES, Event, Trace, _as_float

__all__ = ["Comparison", "compare", "event_difference", "first_difference_in_step"]

ValueGetter = Callable[[Event], "np.ndarray | None"]

# How the sentence names where an event sits.
_WHERE = {
    "init": ("at initialisation", "the initial value of"),
    "input": ("in the input", "the input"),
    "forward": ("in the forward pass", "the output of"),
    "loss": ("at the loss", "the loss"),
    "grad": ("in the backward pass", "the gradient of"),
    "param": ("in the optimizer step", "the updated"),
    "metric": ("in the metrics", "the metric"),
    "custom": ("in a custom event", "the custom event"),
}


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


def event_difference(a: Event, b: Event, va: np.ndarray | None = None, vb: np.ndarray | None = None) -> dict:
    """How two events of the same kind differ: counts, max absolute/relative difference, ULPs.

    ``va``/``vb`` are their stored values (``Trace.value``); without them only the stats are
    compared and the counts are None.
    """
    out: dict[str, Any] = {
        "step": a.step, "index": a.index, "phase": a.phase, "name": a.name,
        "shape": list(a.shape), "dtype": a.dtype, "size": a.size,
        "digest_a": a.digest, "digest_b": b.digest,
        "values": False, "differing": None, "max_abs": None, "max_rel": None, "max_ulp": None,
        "stats_a": {"l2": _f(a.l2), "mean": _f(a.mean), "maxabs": _f(a.maxabs), "nonfinite": a.nonfinite},
        "stats_b": {"l2": _f(b.l2), "mean": _f(b.mean), "maxabs": _f(b.maxabs), "nonfinite": b.nonfinite},
        "input_order_only": None,
        "samples": None,
    }
    if a.phase == "input" and a.sample_digests is not None and b.sample_digests is not None:
        sa, sb = a.sample_digests, b.sample_digests
        ca, cb = Counter(sa), Counter(sb)
        out["input_order_only"] = ca == cb and sa != sb
        out["samples"] = {
            "count": len(sa),
            "moved": sum(1 for x, y in zip(sa, sb) if x != y),  # positions holding another sample
            "changed": sum((ca - cb).values()),                  # samples of A that B does not have
        }
    if va is None or vb is None or va.shape != vb.shape or va.dtype != vb.dtype:
        return out
    out["values"] = True
    bits_a, bits_b = _bits(va).reshape(-1), _bits(vb).reshape(-1)
    ne = bits_a != bits_b
    if va.dtype.kind == "c":
        ne = ne.reshape(-1, 2).any(axis=1)
    out["differing"] = int(np.count_nonzero(ne))
    fa, fb = _as_float(va, a.dtype), _as_float(vb, b.dtype)
    if fa is not None and fb is not None and out["differing"]:
        x = fa.reshape(-1).astype(np.float64)[ne]
        y = fb.reshape(-1).astype(np.float64)[ne]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            d = np.abs(x[ok] - y[ok])
            scale = np.maximum(np.abs(x[ok]), np.abs(y[ok]))
            out["max_abs"] = float(d.max())
            rel = np.divide(d, scale, out=np.zeros_like(d), where=scale > 0)
            out["max_rel"] = float(rel.max())
    elif out["differing"] == 0:
        out["max_abs"] = out["max_rel"] = 0.0
    if _is_float(a.dtype) and va.dtype.kind != "c":
        if out["differing"]:
            oa, ob = _ordered(bits_a[ne]), _ordered(bits_b[ne])
            if fa is not None and fb is not None:  # NaN has no distance in ULPs
                keep = ~(np.isnan(fa.reshape(-1)[ne]) | np.isnan(fb.reshape(-1)[ne]))
                oa, ob = oa[keep], ob[keep]
            out["max_ulp"] = int(max(abs(int(p) - int(q)) for p, q in zip(oa.tolist(), ob.tolist()))) if len(oa) else None
        else:
            out["max_ulp"] = 0
    return out


def _f(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _structural(step: int, index: int, a: Event | None, b: Event | None) -> dict:
    if a is None or b is None:
        kind = "missing-event"
    elif (a.phase, a.name) != (b.phase, b.name):
        kind = "other-event"
    elif a.shape != b.shape:
        kind = "other-shape"
    else:
        kind = "other-dtype"
    desc = lambda e: None if e is None else {"phase": e.phase, "name": e.name, "dtype": e.dtype, "shape": list(e.shape)}
    return {"kind": kind, "step": step, "index": index, "a": desc(a), "b": desc(b)}


def first_difference_in_step(events_a: list[Event], events_b: list[Event], value_a: ValueGetter,
                             value_b: ValueGetter, earlier_identical: bool = True) -> dict | None:
    """The first difference between two event lists of one step, or None when identical.

    Returns ``{"kind": "numeric", ...event_difference}`` or ``{"kind": "structural", ...}``.
    """
    for i in range(max(len(events_a), len(events_b))):
        a = events_a[i] if i < len(events_a) else None
        b = events_b[i] if i < len(events_b) else None
        if a is None or b is None or not a.same_kind(b):
            step = (a or b).step
            return {"kind": "structural", **_structural(step, i, a, b)}
        if a.digest != b.digest:
            d = event_difference(a, b, value_a(a), value_b(b))
            d["before_identical"] = earlier_identical
            return {"kind": "numeric", **d}
    return None


# --- two traces ---------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Two traces compared. Plain data: ``to_dict()`` feeds ``--json`` and the HTML report."""

    a: str
    b: str
    identical: bool
    first_divergence: dict | None
    structural: list[dict]
    growth: list[dict]
    env_diff: dict | None
    status_a: str = "complete"
    status_b: str = "complete"
    steps_a: int = 0
    steps_b: int = 0
    steps_compared: int = 0
    events_compared: int = 0
    phases: list[str] = field(default_factory=lambda: list(PHASES))
    notes: list[str] = field(default_factory=list)

    @property
    def different_models(self) -> bool:
        """A structural mismatch before any numeric divergence: the traces are not of one program."""
        return bool(self.structural) and self.first_divergence is None

    def check_same_model(self) -> None:
        """Raise ``StructuralMismatchError`` (one line) when the traces record different models."""
        if self.different_models:
            raise StructuralMismatchError(self._structural_text() + "; compare two traces of the same script")

    def to_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "identical": self.identical, "sentence": self.sentence(),
            "first_divergence": self.first_divergence, "structural": self.structural, "growth": self.growth,
            "env_diff": self.env_diff, "status_a": self.status_a, "status_b": self.status_b,
            "steps_a": self.steps_a, "steps_b": self.steps_b, "steps_compared": self.steps_compared,
            "events_compared": self.events_compared, "phases": self.phases, "notes": self.notes,
            "different_models": self.different_models,
        }

    # --- the plain-English lead ---
    def sentence(self) -> str:
        """One plain sentence (or two) saying whether and where the runs part."""
        if self.different_models:
            return f"{self._structural_text()}."
        if self.first_divergence is None:
            if self.steps_compared == 0:
                return "The traces have no recorded step in common, so nothing could be compared."
            text = (f"The runs are identical: {_n(self.steps_compared)} step{'s' if self.steps_compared != 1 else ''} "
                    f"and {_n(self.events_compared)} events, every digest equal.")
            if self.steps_a != self.steps_b:
                shorter, n = ("A", self.steps_a) if self.steps_a < self.steps_b else ("B", self.steps_b)
                text += f" Trace {shorter} has only {_n(n)} recorded steps, so the rest was not compared."
            return text
        d = self.first_divergence
        where, what = _WHERE.get(d["phase"], ("", "the event"))
        head = f"The runs part at step {d['step']}, {where}, at {what} `{d['name']}`" if d["phase"] not in (
            "loss",) else f"The runs part at step {d['step']}, at the loss `{d['name']}`"
        text = head + ": " + _difference_text(d) + _before_text(d) + "."
        last = next((g for g in reversed(self.growth) if g.get("param_rel_diff") is not None), None)
        if last is not None and last["step"] > d["step"]:
            basis = "" if last.get("param_basis") == "values" else ", at least"
            text += f" By step {last['step']} the parameters differ by {_g(last['param_rel_diff'])} (relative{basis})."
        if self.structural:
            s = self.structural[0]
            text += f" Later, at step {s['step']}, the traces stop matching event for event ({s['kind']})."
        return text

    def _structural_text(self) -> str:
        s = self.structural[0]
        if s["kind"] == "no-common-steps":
            return "The traces have no recorded step in common"
        side = lambda e: "nothing" if e is None else f"`{e['name']}` ({e['phase']}, {e['dtype']}{e['shape']})"
        what = {"missing-event": "one trace has an event the other lacks",
                "other-event": "the traces record different models",
                "other-shape": "the traces record tensors of different shapes",
                "other-dtype": "the traces record tensors of different dtypes"}[s["kind"]]
        return (f"Structural mismatch, {what}: at step {s['step']}, event {s['index']} is {side(s['a'])} in A "
                f"but {side(s['b'])} in B")


def _difference_text(d: dict) -> str:
    if d.get("input_order_only"):
        smp = d["samples"]
        return (f"the same {_n(smp['count'])} samples arrive in another order "
                f"({_n(smp['moved'])} positions hold another sample)")
    if d.get("differing") is not None:
        text = f"{_n(d['differing'])} of {_n(d['size'])} values differ"
        if d.get("max_abs") is not None:
            text += f" by at most {_g(d['max_abs'])}"
            if d.get("max_ulp") is not None:
                text += f" ({_n(d['max_ulp'])} ULP)"
        elif d.get("max_ulp") is not None:
            text += f" by at most {_n(d['max_ulp'])} ULP"
    else:
        a, b = d["stats_a"], d["stats_b"]
        text = f"the {_n(d['size'])} values differ (l2 norm {_g(a['l2'], 8)} vs {_g(b['l2'], 8)}; values not kept)"
    if d.get("samples") and d["samples"]["changed"]:
        text += f"; {_n(d['samples']['changed'])} of {_n(d['samples']['count'])} samples have other content"
    nf_a, nf_b = d["stats_a"]["nonfinite"], d["stats_b"]["nonfinite"]
    if nf_a != nf_b:
        text += f"; non-finite values: {_n(nf_a)} in A, {_n(nf_b)} in B"
    return text


def _before_text(d: dict) -> str:
    seen = set(d.get("before_checked") or ())
    if not d.get("before_identical"):
        return ""
    has_input = "input" in seen
    has_params = bool(seen & {"init", "param"})
    if has_input and has_params:
        return "; inputs and parameters were identical up to there"
    if has_params:
        return "; parameters were identical up to there (inputs not recorded)"
    if has_input:
        return "; inputs were identical up to there (parameters not recorded)"
    if seen:
        return "; everything recorded before it was identical"
    return "; it is the first event recorded"


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def _g(x, digits: int = 2) -> str:
    if x is None:
        return "?"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def _env_diff(ha: dict, hb: dict) -> dict | None:
    ea, eb = ha.get("env"), hb.get("env")
    if not isinstance(ea, dict) or not isinstance(eb, dict):
        return None
    with contextlib.suppress(ImportError, AttributeError):
        from . import env

        try:
            return env.diff(ea, eb).to_dict()
        except Exception:  # noqa: BLE001 - a broken env diff must not hide the trace comparison
            pass
    fa, fb = _flatten(ea), _flatten(eb)
    diffs = [{"key": k, "a": fa.get(k), "b": fb.get(k), "rank": None, "why": None}
             for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return {"differences": diffs, "numerics": None, "source": "plain key diff"}


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _param_rel(pairs: list[tuple[Event, Event]], value_a: ValueGetter, value_b: ValueGetter) -> tuple[float | None, str | None]:
    """Relative L2 difference of the parameters, from values where kept, else from norms (a lower bound)."""
    num = den = 0.0
    exact = approx = 0
    for a, b in pairs:
        den += (a.l2 if math.isfinite(a.l2) else 0.0) ** 2
        if a.digest == b.digest:
            continue
        va = value_a(a) if a.has_value else None
        vb = value_b(b) if b.has_value else None
        fa = _as_float(va, a.dtype) if va is not None else None
        fb = _as_float(vb, b.dtype) if vb is not None else None
        if fa is not None and fb is not None:
            diff = fa.astype(np.float64) - fb.astype(np.float64)
            diff = diff[np.isfinite(diff)]
            num += float(np.dot(diff.reshape(-1), diff.reshape(-1)))
            exact += 1
        elif math.isfinite(a.l2) and math.isfinite(b.l2):
            num += (a.l2 - b.l2) ** 2  # | |a| - |b| | <= |a - b|
            approx += 1
    if not pairs or den == 0:
        return None, None
    basis = "values" if not approx else ("norms" if not exact else "mixed")
    return math.sqrt(num) / math.sqrt(den), basis


def compare(a: Trace | str | os.PathLike, b: Trace | str | os.PathLike) -> Comparison:
    """Compare two traces event by event, in order; see ``Comparison``.

    Only the steps both traces recorded, and the phases both captured, are compared. Opening a
    file that is not a trace raises ``BadTraceError``.
    """
    with contextlib.ExitStack() as stack:
        ta = a if isinstance(a, Trace) else stack.enter_context(Trace.open(a))
        tb = b if isinstance(b, Trace) else stack.enter_context(Trace.open(b))
        return _compare(ta, tb)


def _compare(ta: Trace, tb: Trace) -> Comparison:
    notes: list[str] = []
    phases = list(PHASES)
    cap_a = (ta.meta("recorder") or {}).get("capture")
    cap_b = (tb.meta("recorder") or {}).get("capture")
    if cap_a and cap_b and set(cap_a) != set(cap_b):
        phases = [p for p in PHASES if p in cap_a and p in cap_b]
        notes.append(f"the traces captured different phases; only {', '.join(phases)} compared")
    keep = set(phases)
    sa, sb = ta.steps(), tb.steps()
    common = sorted(set(sa) & set(sb))
    if len(common) < max(len(sa), len(sb)) and common:
        notes.append(f"{len(common)} recorded steps in common (A has {len(sa)}, B has {len(sb)})")
    for label, t in (("A", ta), ("B", tb)):
        if t.status == "running":
            notes.append(f"trace {label} was cut off (status running): it holds the steps committed before "
                         "the run ended")

    first: dict | None = None
    structural: list[dict] = []
    growth: list[dict] = []
    before: set[str] = set()
    n_events = 0
    for step in common:
        ea = [e for e in ta.events(step) if e.phase in keep]
        eb = [e for e in tb.events(step) if e.phase in keep]
        differing = 0
        params: list[tuple[Event, Event]] = []
        broken = None
        for i in range(max(len(ea), len(eb))):
            x = ea[i] if i < len(ea) else None
            y = eb[i] if i < len(eb) else None
            if x is None or y is None or not x.same_kind(y):
                broken = _structural(step, i, x, y)
                break
            n_events += 1
            if x.phase == "param":
                params.append((x, y))
            if x.digest != y.digest:
                differing += 1
                if first is None:
                    first = event_difference(x, y, ta.value(x) if x.has_value else None,
                                             tb.value(y) if y.has_value else None)
                    first["before_identical"] = True
                    first["before_checked"] = [p for p in PHASES if p in before]
            elif first is None:
                before.add(x.phase)
        if first is not None:
            rel, basis = _param_rel(params, ta.value, tb.value)
            growth.append({"step": step, "events": min(len(ea), len(eb)), "differing": differing,
                           "param_rel_diff": rel, "param_basis": basis})
        if broken is not None:
            structural.append(broken)
            break
    if not common:
        structural.append({"kind": "no-common-steps", "step": None, "index": None, "a": None, "b": None})
    return Comparison(
        a=str(ta.path), b=str(tb.path),
        identical=first is None and not structural and bool(common),
        first_divergence=first, structural=structural, growth=growth,
        env_diff=_env_diff(ta.header, tb.header),
        status_a=ta.status, status_b=tb.status, steps_a=len(sa), steps_b=len(sb),
        steps_compared=len(common), events_compared=n_events, phases=phases, notes=notes,
    )
