"""Two traces side by side: identical, or where they first part and how the difference grows.

Bitwise equality of two events is equality of their digests. The first divergence is the first
event, in order, whose digest differs (``diff`` skips the leading steps whose summary digests are
equal without reading their events); an event missing, of another shape, dtype or name is a
structural mismatch, reported as such and never as a numeric divergence. One function,
:func:`first_divergence`, finds it in a step: ``diff`` uses it offline, the recorder live
(``twinrun run --against``).

>>> c = diff("a.trace", "b.trace")           # doctest: +SKIP
>>> print(c.sentence())                       # doctest: +SKIP
The runs part at step 3, in the backward pass, at the gradient of `classifier.weight`: ...
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import StructuralMismatchError, UsageError
from .._format import fmt_count, fmt_float
from ..env import EnvDiff
from ..trace import PHASES, Event, Trace, as_float
from .events import ValueGetter, divergence_of, event_difference, first_divergence, scan_step
from .model import Divergence, EventDesc, EventStats, Growth, Samples, Structural, StructuralKind, phase_words
from .topology import Topology, compare_topologies, world_size

__all__ = ["Comparison", "Divergence", "EventDesc", "EventStats", "Growth", "Samples", "Structural", "StructuralKind",
           "Topology", "captured_phases", "diff", "diff_ranks", "event_difference", "first_divergence", "phase_words"]

# --- two traces -----------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Two traces compared. Plain data: ``to_dict()`` feeds ``--json`` and the HTML report."""

    a: str
    b: str
    identical: bool
    first_divergence: Divergence | None
    structural: list[Structural]
    growth: list[Growth]
    env_diff: EnvDiff | None
    status_a: str = "complete"
    status_b: str = "complete"
    steps_a: int = 0
    steps_b: int = 0
    steps_compared: int = 0
    events_compared: int = 0
    phases: list[str] = field(default_factory=lambda: [str(p) for p in PHASES])
    notes: list[str] = field(default_factory=list)
    topology: Topology | None = None      # traces of other rank counts: parameters only (``topology``)

    @property
    def different_models(self) -> bool:
        """A structural mismatch before any numeric divergence: the traces are not of one program."""
        return bool(self.structural) and self.first_divergence is None

    def check_same_model(self) -> None:
        """Raise ``StructuralMismatchError`` (one line) when the traces record different models."""
        if self.different_models:
            raise StructuralMismatchError(self.structural[0].text() + "; compare two traces of the same script")

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "identical": self.identical, "sentence": self.sentence(),
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
            "structural": [s.to_dict() for s in self.structural], "growth": [g.to_dict() for g in self.growth],
            "env_diff": None if self.env_diff is None else self.env_diff.to_dict(),
            "status_a": self.status_a, "status_b": self.status_b,
            "steps_a": self.steps_a, "steps_b": self.steps_b, "steps_compared": self.steps_compared,
            "events_compared": self.events_compared, "phases": list(self.phases), "notes": list(self.notes),
            "different_models": self.different_models,
            "topology": None if self.topology is None else self.topology.to_dict(),
        }

    def sentence(self) -> str:
        """One plain sentence (or two) saying whether and where the runs part."""
        if self.different_models:
            return f"{self.structural[0].text()}."
        if self.topology is not None:
            return self.topology.sentence()
        d = self.first_divergence
        if d is None:
            if self.steps_compared == 0:
                return "The traces have no recorded step in common, so nothing could be compared."
            text = (f"The runs are identical: {fmt_count(self.steps_compared)} step"
                    f"{'s' if self.steps_compared != 1 else ''} and {fmt_count(self.events_compared)} events, "
                    "every digest equal.")
            if self.steps_a != self.steps_b:
                shorter, n = ("A", self.steps_a) if self.steps_a < self.steps_b else ("B", self.steps_b)
                text += f" Trace {shorter} has only {fmt_count(n)} recorded steps, so the rest was not compared."
            return text
        text = f"The runs part {d.where()}: {d.text()}{d.before_text()}."
        last = next((g for g in reversed(self.growth) if g.param_rel_diff is not None), None)
        if last is not None and last.step > d.step:
            basis = "" if last.param_basis == "values" else ", at least"
            text += f" By step {last.step} the parameters differ by {fmt_float(last.param_rel_diff)} (relative{basis})."
        if self.structural:
            s = self.structural[0]
            text += f" Later, at step {s.step}, the traces stop matching event for event ({s.kind})."
        return text


def _same_launch(ta: Trace, tb: Trace) -> str | None:
    """A note when the traces are two ranks of one launch: their inputs differ by design."""
    from .replicas import rank_of

    ra, rb = rank_of(ta), rank_of(tb)
    if ra is None or rb is None or ra.rank == rb.rank or not ra.run_id or ra.run_id != rb.run_id:
        return None
    return (f"these are ranks {ra.rank} and {rb.rank} of one run: their inputs, activations and losses differ by "
            "design; `twinrun replicas` compares the replicas' parameters")


def _diff_topologies(ta: Trace, tb: Trace) -> Comparison:
    """A 1-process trace and a rank's (or two rank counts): the parameters only, by name."""
    sa, sb = ta.steps(), tb.steps()
    common = sorted(set(sa) & set(sb))
    topo, first_pair = compare_topologies(ta, tb, common)
    first = None
    if first_pair is not None:
        a, b = first_pair
        first = event_difference(a, b, ta.value(a) if a.has_value else None, tb.value(b) if b.has_value else None)
        first.before_checked = ["init", "param"]
    growth = []
    if topo.first is not None:
        growth = [Growth(s.step, s.tensors, s.differing_tensors, s.param_rel,
                         "values" if s.differing_values is not None else "norms")
                  for s in topo.steps if s.step >= max(0, topo.first.step)]
    notes = ["inputs, activations, losses and gradients differ by design between runs of other rank counts: only "
             "the parameters (init, param) are compared", *topo.notes]
    return Comparison(
        a=str(ta.path), b=str(tb.path), identical=topo.verdict == "identical", first_divergence=first,
        structural=[] if common else [Structural(StructuralKind.NO_COMMON_STEPS, None, None, None, None)],
        growth=growth, env_diff=_env_diff(ta.header, tb.header), status_a=ta.status, status_b=tb.status,
        steps_a=len(sa), steps_b=len(sb), steps_compared=len(common),
        events_compared=sum(s.tensors for s in topo.steps), phases=["init", "param"], notes=notes, topology=topo)


def _env_diff(ha: dict[str, Any], hb: dict[str, Any]) -> EnvDiff | None:
    from ..env import diff as env_diff

    ea, eb = ha.get("env"), hb.get("env")
    if not isinstance(ea, dict) or not isinstance(eb, dict):
        return None
    return env_diff(ea, eb, strict=False)


def _param_rel(pairs: list[tuple[Event, Event]], value_a: ValueGetter,
               value_b: ValueGetter) -> tuple[float | None, str | None]:
    """Relative L2 difference of the parameters, from values where kept, else from norms (a lower bound)."""
    num = den = 0.0
    exact = approx = 0
    for a, b in pairs:
        den += (a.l2 if math.isfinite(a.l2) else 0.0) ** 2
        if a.digest == b.digest:
            continue
        va = value_a(a) if a.has_value else None
        vb = value_b(b) if b.has_value else None
        fa = as_float(va, a.dtype) if va is not None else None
        fb = as_float(vb, b.dtype) if vb is not None else None
        if fa is not None and fb is not None:
            delta = fa.astype(np.float64) - fb.astype(np.float64)
            delta = delta[np.isfinite(delta)]
            num += float(np.dot(delta.reshape(-1), delta.reshape(-1)))
            exact += 1
        elif math.isfinite(a.l2) and math.isfinite(b.l2):
            num += (a.l2 - b.l2) ** 2  # | |a| - |b| | <= |a - b|
            approx += 1
    if not pairs or den == 0:
        return None, None
    basis = "values" if not approx else ("norms" if not exact else "mixed")
    return math.sqrt(num) / math.sqrt(den), basis


def diff(a: Trace | str | os.PathLike[str], b: Trace | str | os.PathLike[str]) -> Comparison:
    """Compare two traces event by event, in order; see :class:`Comparison`.

    Only the steps both traces recorded, and the phases both captured, are compared. Opening a
    file that is not a trace raises ``BadTraceError``.

    >>> c = twinrun.diff("a.trace", "b.trace")        # doctest: +SKIP
    >>> c.identical, c.first_divergence.step          # doctest: +SKIP
    (False, 3)
    """
    with contextlib.ExitStack() as stack:
        ta = a if isinstance(a, Trace) else stack.enter_context(Trace.open(a))
        tb = b if isinstance(b, Trace) else stack.enter_context(Trace.open(b))
        return _diff(ta, tb)


def diff_ranks(a: Sequence[str | os.PathLike[str]], b: Sequence[str | os.PathLike[str]]) -> tuple[int, Comparison]:
    """Rank k of one run against rank k of another (``a[k]`` with ``b[k]``): the comparison that parts first
    (earliest step, then event, then rank) and its rank; rank 0's when every rank repeats."""
    if len(a) != len(b) or not a:
        raise UsageError(f"runs of {len(a)} and {len(b)} ranks: compare runs of one rank count")
    found = [diff(x, y) for x, y in zip(a, b)]
    best: tuple[tuple[int, int, int], int] | None = None
    for k, c in enumerate(found):
        d = c.first_divergence
        if d is not None:
            where = (d.step, d.index, k)
        elif c.structural:
            where = (c.structural[0].step or 0, c.structural[0].index or 0, k)
        else:
            continue
        if best is None or where < best[0]:
            best = (where, k)
    k = 0 if best is None else best[1]
    return k, found[k]


def captured_phases(t: Trace) -> list[str] | None:
    """The phases a trace's recorder captured (None: not recorded, i.e. all)."""
    recorder = t.meta("recorder")
    cap = recorder.get("capture") if isinstance(recorder, dict) else None
    return [str(p) for p in cap] if isinstance(cap, list) else None


def _diff(ta: Trace, tb: Trace) -> Comparison:
    if world_size(ta) != world_size(tb):
        return _diff_topologies(ta, tb)
    notes: list[str] = []
    same_launch = _same_launch(ta, tb)
    if same_launch:
        notes.append(same_launch)
    phases = [str(p) for p in PHASES]
    cap_a, cap_b = captured_phases(ta), captured_phases(tb)
    if cap_a and cap_b and set(cap_a) != set(cap_b):
        phases = [p for p in phases if p in cap_a and p in cap_b]
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

    first: Divergence | None = None
    structural: list[Structural] = []
    growth: list[Growth] = []
    before: set[str] = set()
    n_events = skipped = 0
    summaries = (ta.step_summaries(), tb.step_summaries()) if len(phases) == len(PHASES) else (None, None)
    if summaries[0] is not None and summaries[1] is not None:
        # Leading steps with equal summaries hold the same events bit for bit (schema 2): they add their
        # event count and phases and nothing else, so their events are not read (a long identical run
        # costs one small row per step).
        for step in common:
            x = summaries[0].get(step)
            if x is None or x != summaries[1].get(step):
                break
            n_events += x[0]
            before.update(x[2])
            skipped += 1
    for step in common[skipped:]:
        ea = [e for e in ta.events(step) if e.phase in keep]
        eb = [e for e in tb.events(step) if e.phase in keep]
        scan = scan_step(ea, eb)
        n_events += scan.events
        if first is None:
            if scan.first is not None:
                first = divergence_of(scan, ta.value, tb.value, before)
            else:
                before |= scan.before
        if first is not None:
            rel, basis = _param_rel(scan.params, ta.value, tb.value)
            growth.append(Growth(step, min(len(ea), len(eb)), scan.differing, rel, basis))
        if scan.structural is not None:
            structural.append(scan.structural)
            break
    if not common:
        structural.append(Structural(StructuralKind.NO_COMMON_STEPS, None, None, None, None))
    return Comparison(
        a=str(ta.path), b=str(tb.path),
        identical=first is None and not structural and bool(common),
        first_divergence=first, structural=structural, growth=growth,
        env_diff=_env_diff(ta.header, tb.header),
        status_a=ta.status, status_b=tb.status, steps_a=len(sa), steps_b=len(sb),
        steps_compared=len(common), events_compared=n_events, phases=phases, notes=notes,
    )
