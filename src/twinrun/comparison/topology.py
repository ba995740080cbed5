"""Across topologies: a 1-process trace and a rank's trace of an N-process run (or two rank counts).

At the same global batch the two runs compute the same mathematics in another order: one GEMM over B
rows and a mean over B losses in one process, N GEMMs over B/N rows and an all-reduce average across
ranks. Their inputs, activations and losses legitimately differ (a rank sees its share of the batch),
so only the parameters are compared, ``init`` and ``param``, by name (DDP's ``module.`` prefix
removed); per step: how many values differ, the largest difference in ULPs, absolutely and relative
to the tensor's largest magnitude (ULPs alone mislead near zero, where an ULP is tiny), and the
parameters' relative L2 distance, so the report can say when and how fast the runs part.

"In the last bits": at every step the largest difference is at most 2**8 ULP of its tensor's largest
value (the top 16 of float32's 24 significant bits agree). Measured on digits (docs/distributed.md),
1 process and 2 ranks part at step 0 by less than one ULP of the largest weight, and stay there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._format import fmt_count, fmt_float
from ..trace import Event, Trace, as_float
from .events import event_difference

__all__ = ["Topology", "TopologyStep", "bare_name", "compare_topologies", "world_size"]

COMPARED = ("init", "param")
_MANTISSA = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}
_LAST_BITS = 8      # "in the last bits": no difference above the last 8 significant bits


def world_size(t: Trace) -> int:
    """The number of ranks of the run a trace belongs to (1: a single process)."""
    from .replicas import rank_of

    info = rank_of(t)
    return 1 if info is None else info.world_size


def bare_name(name: str) -> str:
    """A parameter's name without DDP's wrapper prefix: ``module.fc1.weight`` -> ``fc1.weight``."""
    return name.removeprefix("module.")


@dataclass
class TopologyStep:
    """One step of the two runs' parameters compared."""

    step: int
    tensors: int                      # parameter events compared
    differing_tensors: int
    values: int                       # values compared
    differing_values: int | None      # None: some differing tensor kept no values
    max_ulp: int | None
    max_abs: float | None
    max_rel_to_scale: float | None    # max |a - b| / max |a| over the differing tensors
    param_rel: float | None           # || a - b || / || a || over every parameter (values where kept)
    first_name: str | None = None     # the first parameter that differs at this step

    def ulps_at_scale(self, mantissa: int) -> float | None:
        """The largest difference in ULPs of its tensor's largest value (an ULP there is 2**(1-mantissa)
        of it, to within a factor of 2)."""
        r = self.max_rel_to_scale
        return None if r is None else r * 2.0 ** (mantissa - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tensors": self.tensors, "differing_tensors": self.differing_tensors,
                "values": self.values, "differing_values": self.differing_values, "max_ulp": self.max_ulp,
                "max_abs": self.max_abs, "max_rel_to_scale": self.max_rel_to_scale, "param_rel": self.param_rel,
                "first_name": self.first_name}


@dataclass
class Topology:
    """Two runs of other rank counts, parameters compared step by step."""

    world_a: int
    world_b: int
    dtype: str
    steps: list[TopologyStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mantissa(self) -> int:
        return _MANTISSA.get(self.dtype, 24)

    @property
    def first(self) -> TopologyStep | None:
        return next((s for s in self.steps if s.differing_tensors), None)

    @property
    def max_ulps_at_scale(self) -> float | None:
        """Over the steps: the largest difference in ULPs of its tensor's largest value (None: values not kept)."""
        u = [s.ulps_at_scale(self.mantissa) for s in self.steps if s.differing_tensors]
        return None if not u or any(x is None for x in u) else max(x for x in u if x is not None)

    @property
    def agreeing_bits(self) -> float | None:
        """The significant bits of each tensor's largest value that every difference leaves alone."""
        u = self.max_ulps_at_scale
        return None if u is None else max(0.0, self.mantissa - math.log2(max(1.0, u)))

    @property
    def verdict(self) -> str:
        """``identical``, ``last-bits`` (expected: other summation orders), ``apart`` or ``unknown``."""
        if not self.steps:
            return "unknown"
        if self.first is None:
            return "identical"
        u = self.max_ulps_at_scale
        if u is None:
            return "unknown"
        return "last-bits" if u <= 2 ** _LAST_BITS else "apart"

    @property
    def growth_per_step(self) -> float | None:
        """The factor the parameters' relative distance grows by per step, from the first differing step."""
        rows = [s for s in self.steps if s.param_rel]
        if len(rows) < 2 or rows[-1].step == rows[0].step:
            return None
        assert rows[0].param_rel and rows[-1].param_rel
        return float((rows[-1].param_rel / rows[0].param_rel) ** (1.0 / (rows[-1].step - rows[0].step)))

    def to_dict(self) -> dict[str, Any]:
        return {"world_a": self.world_a, "world_b": self.world_b, "dtype": self.dtype, "verdict": self.verdict,
                "ulps_at_scale": self.max_ulps_at_scale, "agreeing_bits": self.agreeing_bits,
                "mantissa_bits": self.mantissa,
                "growth_per_step": self.growth_per_step, "steps": [s.to_dict() for s in self.steps],
                "notes": list(self.notes)}

    def sentence(self) -> str:
        runs = f"the {_runs(self.world_a)} and the {_runs(self.world_b)}"
        first = self.first
        n = len(self.steps)
        if self.verdict == "unknown":
            return (f"Comparing {runs} by their parameters: nothing to compare (no init or param event in "
                    "common).") if not self.steps else (
                    f"The {runs} part at step {first.step if first else '?'} (`{first.first_name if first else '?'}`), "
                    "but the traces kept no values to say by how much.")
        if first is None:
            return (f"The parameters of {runs} are identical at initialisation and after each of the "
                    f"{fmt_count(n - 1 if self.steps[0].step == 0 else n)} steps compared.")
        last = self.steps[-1]
        when = "at initialisation" if first.step < 0 else f"at step {first.step}"
        text = (f"The parameters of {runs} part {when} (`{first.first_name}`), ")
        u = self.max_ulps_at_scale or 0.0
        rel = max(s.max_rel_to_scale or 0.0 for s in self.steps)
        size = (f"the largest difference is {_ulps(u)} of its tensor's largest value (relative {fmt_float(rel)}; "
                f"value by value up to {fmt_count(max(s.max_ulp or 0 for s in self.steps))} ULP, near zero where an "
                "ULP is tiny)")
        growth = self.growth_per_step
        pace = "" if growth is None else (
            f"; their relative distance grows about x{growth:.2g} per step" if growth > 1.05 else
            "; their relative distance stays about the same from step to step")
        if self.verdict == "last-bits":
            text += (f"in the last bits, as expected: through step {last.step} {size}{pace}. The same global batch "
                     "is summed in another order (one GEMM over the whole batch in one process, per-rank GEMMs and "
                     "an all-reduce across ranks), which changes the last bits and nothing else.")
        else:
            text += (f"by more than the last bits: by step {last.step} {size}{pace}. Other summation orders alone "
                     "part in the last bits; check that both runs use the same global batch, samples, learning rate "
                     "and seeds.")
        return text


def _ulps(u: float) -> str:
    if u < 1:
        return "less than one ULP"
    return f"{u:.3g} ULP" if u < 1000 else f"{fmt_count(round(u))} ULP"


def _runs(world: int) -> str:
    return "1-process run" if world == 1 else f"{world}-rank run"


def _key(e: Event) -> tuple[str, str]:
    return str(e.phase), bare_name(e.name)


def compare_topologies(ta: Trace, tb: Trace, steps: list[int]) -> tuple[Topology, tuple[Event, Event] | None]:
    """The parameters of two traces of other rank counts, step by step, and the first differing pair."""
    topo = Topology(world_size(ta), world_size(tb), "float32")
    first: tuple[Event, Event] | None = None
    unmatched: set[str] = set()
    dtype_seen = False
    for step in steps:
        ea = [e for e in ta.events(step) if e.phase in COMPARED]
        eb = {_key(e): e for e in tb.events(step) if e.phase in COMPARED}
        # init (at step 0) is its own row, step -1, as "before any step".
        for phase, label in (("init", -1), ("param", step)):
            pairs = []
            for a in (e for e in ea if e.phase == phase):
                b = eb.get(_key(a))
                if b is None or b.shape != a.shape or b.dtype != a.dtype:
                    unmatched.add(bare_name(a.name))
                    continue
                pairs.append((a, b))
            if not pairs:
                continue
            if not dtype_seen:
                topo.dtype, dtype_seen = pairs[0][0].dtype, True
            row = _row(label, pairs, ta, tb)
            topo.steps.append(row)
            if first is None and row.differing_tensors:
                first = next((a, b) for a, b in pairs if a.digest != b.digest)
    if unmatched:
        topo.notes.append(f"{len(unmatched)} parameter(s) found in one trace only or with another shape, not "
                          f"compared (e.g. `{sorted(unmatched)[0]}`)")
    topo.notes += _setting_notes(ta, tb)
    return topo, first


def _row(step: int, pairs: list[tuple[Event, Event]], ta: Trace, tb: Trace) -> TopologyStep:
    row = TopologyStep(step, len(pairs), 0, sum(a.size for a, _ in pairs), 0, None, None, None, None)
    num = den = 0.0
    exact = True
    for a, b in pairs:
        va = ta.value(a) if a.has_value else None
        vb = tb.value(b) if b.has_value else None
        fa = as_float(va, a.dtype) if va is not None else None
        if fa is not None:
            den += float(np.sum(np.square(fa.astype(np.float64))))
        elif math.isfinite(a.l2):
            den += a.l2 ** 2
        if a.digest == b.digest:
            continue
        row.differing_tensors += 1
        row.first_name = row.first_name or bare_name(a.name)
        d = event_difference(a, b, va, vb)
        if d.differing is None or d.max_abs is None:
            exact = False
            if math.isfinite(a.l2) and math.isfinite(b.l2):
                num += (a.l2 - b.l2) ** 2
            continue
        assert row.differing_values is not None
        row.differing_values += d.differing
        row.max_ulp = max(row.max_ulp or 0, d.max_ulp or 0)
        row.max_abs = max(row.max_abs or 0.0, d.max_abs)
        scale = a.maxabs if math.isfinite(a.maxabs) and a.maxabs > 0 else None
        if scale is not None:
            row.max_rel_to_scale = max(row.max_rel_to_scale or 0.0, d.max_abs / scale)
        fb = as_float(vb, b.dtype) if vb is not None else None
        if fa is not None and fb is not None:
            delta = fa.astype(np.float64) - fb.astype(np.float64)
            num += float(np.sum(np.square(delta[np.isfinite(delta)])))
    if not exact:
        row.differing_values = None
        row.max_rel_to_scale = None
    if row.differing_tensors == 0:
        row.max_ulp, row.max_abs, row.max_rel_to_scale = 0, 0.0, 0.0
    row.param_rel = math.sqrt(num) / math.sqrt(den) if den > 0 else None
    return row


def _setting_notes(ta: Trace, tb: Trace) -> list[str]:
    """What else differs between the runs that changes the last bits: threads, the global batch."""
    notes = []

    def omp(t: Trace) -> str | None:
        env = t.header.get("env")
        v = (env or {}).get("env_vars", {}).get("OMP_NUM_THREADS") if isinstance(env, dict) else None
        return str(v) if v is not None else None

    oa, ob = omp(ta), omp(tb)
    if oa != ob:
        notes.append(f"the runs had other thread counts (OMP_NUM_THREADS {oa or 'unset'} vs {ob or 'unset'}; torchrun "
                     "sets 1 per rank unless it is set): the thread count alone changes the last bits, so run the "
                     "1-process run with --threads 1 to compare the topologies alone")
    ba, bb = _global_batch(ta), _global_batch(tb)
    if ba is not None and bb is not None and ba != bb:
        notes.append(f"the global batches differ ({ba} vs {bb} samples per step): compare runs at the same global "
                     "batch, or the parameters part for that reason")
    return notes


def _global_batch(t: Trace) -> int | None:
    steps = t.steps()
    if not steps:
        return None
    ev = next((e for e in t.events(steps[0]) if e.phase == "input" and e.shape), None)
    return None if ev is None else int(ev.shape[0]) * world_size(t)
