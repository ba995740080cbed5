"""Order or content, from the whole run: where run A's input samples are in run B.

Every recorded input event keeps one digest per sample (``Event.sample_digests``). Pooled over every
recorded step, a digest of run A that appears in run B at the same step and position is a sample in
its place; one that appears elsewhere in B is a sample that arrived unchanged in another order (another
position, another batch, another step); one that appears nowhere in B was changed (augmentation, noise)
or was simply not reached by B (a partial epoch covers other samples). Comparing pools, not per-step
multisets, is what makes the answer hold when batches mix samples across steps and when the runs see
only part of an epoch.

>>> p = sample_pools("a.trace", "b.trace")          # doctest: +SKIP
>>> p.detail, round(p.fraction_moved, 2)            # doctest: +SKIP
('order', 0.94)
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from .._format import fmt_count
from ..trace import Trace

__all__ = ["MIN_MOVED", "SamplePools", "sample_pools"]

# A sample found elsewhere in the other run proves order only when samples can be told apart by their
# digests (not labels: ten classes repeat) and when more than a stray duplicate image moved.
MIN_MOVED = 0.05
_DISTINCT = 0.9


@dataclass(frozen=True)
class SamplePools:
    """Run A's per-sample input digests of one input, over every recorded step, found in run B."""

    name: str                 # the input event (e.g. the model's first argument)
    count: int                # A's samples over every recorded step
    distinct: int             # distinct digests among them
    same_place: int           # in B at the same step and position
    moved: int                # in B, at another position or step
    unseen: int               # nowhere in B
    count_b: int              # B's samples
    unseen_b: int             # B's samples nowhere in A
    steps: int                # steps whose inputs were pooled
    mixed: bool               # a step of A holds samples that B had at several other steps

    @property
    def distinguishable(self) -> bool:
        """The digests tell samples apart (most are distinct), so finding one elsewhere means something."""
        return self.count > 0 and self.distinct >= _DISTINCT * self.count

    @property
    def fraction_moved(self) -> float:
        return self.moved / self.count if self.count else 0.0

    @property
    def fraction_unseen(self) -> float:
        return self.unseen / self.count if self.count else 0.0

    @property
    def fraction_same(self) -> float:
        return self.same_place / self.count if self.count else 0.0

    @property
    def differ(self) -> bool:
        return self.same_place < self.count or self.count != self.count_b

    @property
    def detail(self) -> str | None:
        """``order`` when samples of A arrive unchanged elsewhere in B; ``content`` when none does and some
        are nowhere in B; None when the digests cannot tell (labels, no per-sample digests, no difference)."""
        if not self.distinguishable or not self.differ:
            return None
        if self.fraction_moved >= MIN_MOVED:
            return "order"
        return "content" if self.unseen else None

    @property
    def order_proven(self) -> bool:
        """The traces alone prove order: samples of A arrive unchanged at other places in B."""
        return self.detail == "order"

    def sentence(self) -> str:
        """What the pools show, in words (never a bare number without its meaning)."""
        pct = lambda x: f"{100 * x:.0f}%"
        head = (f"of run A's {fmt_count(self.count)} samples of `{self.name}` over {fmt_count(self.steps)} "
                f"recorded step{'s' if self.steps != 1 else ''}, {pct(self.fraction_moved)} arrive unchanged "
                f"at another position in run B, {pct(self.fraction_same)} in the same place, and "
                f"{pct(self.fraction_unseen)} appear nowhere in run B")
        if not self.distinguishable:
            return head + (f" (only {fmt_count(self.distinct)} distinct digests: these inputs do not tell samples "
                           "apart, so they prove neither order nor content)")
        if self.unseen and self.moved:
            head += " (seen in only one run: a partial epoch reaches other samples, or their content changed)"
        elif self.unseen:
            head += " (their content changed, or the runs drew disjoint parts of the data)"
        if self.mixed:
            head += "; batches mix samples across steps"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "distinct": self.distinct, "same_place": self.same_place,
                "moved": self.moved, "unseen": self.unseen, "count_b": self.count_b, "unseen_b": self.unseen_b,
                "steps": self.steps, "mixed": self.mixed, "fraction_moved": round(self.fraction_moved, 4),
                "fraction_unseen": round(self.fraction_unseen, 4), "detail": self.detail}


def _pool(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, int, str]]]:
    """Input name -> (step, position, digest) of every recorded per-sample digest, in order."""
    out: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    with Trace.open(path) as t:
        for e in t.events():
            if e.phase == "input" and e.sample_digests:
                out[e.name].extend((e.step, i, d) for i, d in enumerate(e.sample_digests))
    return out


def _compare(name: str, a: list[tuple[int, int, str]], b: list[tuple[int, int, str]]) -> SamplePools:
    at_b = {(s, i): d for s, i, d in b}
    steps_b: dict[str, set[int]] = defaultdict(set)
    for s, _i, d in b:
        steps_b[d].add(s)
    in_b = Counter(d for _s, _i, d in b)
    in_a = Counter(d for _s, _i, d in a)
    same = sum(1 for s, i, d in a if at_b.get((s, i)) == d)
    found = sum(1 for _s, _i, d in a if d in in_b)
    per_step: dict[int, set[int]] = defaultdict(set)
    for s, _i, d in a:
        others = steps_b.get(d, set()) - {s}
        per_step[s] |= others
    mixed = any(len(v) >= 2 for v in per_step.values())
    return SamplePools(name, len(a), len(in_a), same, found - same, len(a) - found, len(b),
                       sum(c for d, c in in_b.items() if d not in in_a), len({s for s, _i, _d in a}), mixed)


def sample_pools(a: str | os.PathLike[str], b: str | os.PathLike[str],
                 name: str | None = None) -> SamplePools | None:
    """Pool the per-sample digests of both runs and find A's in B; None when no input has them.

    ``name``: the input to compare (default: among the inputs whose samples differ, the one whose digests
    tell samples apart best, which is the data rather than the labels)."""
    pa, pb = _pool(a), _pool(b)
    names = [n for n in pa if n in pb] if name is None else ([name] if name in pa and name in pb else [])
    if not names:
        return None
    found = [_compare(n, pa[n], pb[n]) for n in names]
    differing = [p for p in found if p.differ] or found
    return max(differing, key=lambda p: (p.distinguishable, p.distinct / max(1, p.count), p.count))
