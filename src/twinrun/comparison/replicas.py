"""Replica consistency: do the ranks of one data-parallel run hold the same parameters after every step,
and do they train on different samples?

Read from the rank traces after the run: no tensor crosses between processes and nothing is added to
the user's run (a live check would add a collective to every step); only the digests each rank
recorded are compared, and values are read only to size the first difference (ULPs, absolute and
relative) where the traces kept them.

What must agree across data-parallel replicas: ``init`` (DDP broadcasts rank 0's parameters when it
wraps the model, before the first forward where twinrun records them) and ``param`` (every rank
applies the same all-reduced gradient). What legitimately differs: ``input``, ``forward``, ``loss``,
``metric`` (each rank has its own samples) and ``grad``, which twinrun records as backward produces
each gradient, before DDP's all-reduce: each rank's local gradient. The synchronised gradient is not
recorded on purpose: the parameters after the same step show any rank-local change of it, and
hashing every gradient a second time would cost as much as the ``param`` events themselves.

The inputs give the data check: every rank with the same batch at every step (one seed for the whole
shuffle on every rank, no ``DistributedSampler``), or samples seen by two ranks within the first
epoch (a ``DistributedSampler`` seeded per rank).

>>> r = replicas("out.trace")                  # doctest: +SKIP   (finds out.rank0.trace, out.rank1.trace, ...)
>>> r.consistent, r.first_divergence.step, r.first_divergence.name, r.first_divergence.rank   # doctest: +SKIP
(False, 2, 'module.fc2.bias', 1)
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import UsageError
from .._format import fmt_count, fmt_float
from ..ranks import RankInfo, find_rank_traces
from ..trace import Event, Trace
from .events import event_difference

__all__ = ["COMPARED", "DataCheck", "ReplicaCheck", "ReplicaDivergence", "rank_of", "replicas"]

COMPARED = ("init", "param")


@dataclass
class ReplicaDivergence:
    """The first event where a rank's replica differs from rank 0's, and by how much."""

    step: int
    phase: str
    name: str
    rank: int                       # the first rank that differs from rank 0
    ranks: list[int]                # every rank that differs there
    shape: list[int]
    dtype: str
    size: int
    values: bool = False            # both values kept: the counts below are exact
    differing: int | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    max_ulp: int | None = None
    l2_rank0: float | None = None
    l2_rank: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "phase": self.phase, "name": self.name, "rank": self.rank,
                "ranks": list(self.ranks), "shape": list(self.shape), "dtype": self.dtype, "size": self.size,
                "values": self.values, "differing": self.differing, "max_abs": self.max_abs,
                "max_rel": self.max_rel, "max_ulp": self.max_ulp, "ulps": self.max_ulp,
                "l2_rank0": self.l2_rank0, "l2_rank": self.l2_rank}

    def amount(self) -> str:
        if self.differing is None:
            return (f"values not kept; l2 norm {fmt_float(self.l2_rank0, 8)} on rank 0 vs "
                    f"{fmt_float(self.l2_rank, 8)} on rank {self.rank}")
        text = f"{fmt_count(self.differing)} of {fmt_count(self.size)} values, by at most {fmt_float(self.max_abs)}"
        return text + ("" if self.max_ulp is None else f" = {fmt_count(self.max_ulp)} ULP")


@dataclass
class DataCheck:
    """What the ranks' input digests say about how the data was split."""

    steps: int                                   # steps whose inputs were compared on every rank
    identical_steps: list[int] = field(default_factory=list)   # every rank had the same batch
    window: int = 0                              # steps of the first epoch (before a rank saw a sample again)
    samples: int = 0                             # distinct samples the ranks saw in that window
    overlap: int = 0                             # of them, seen by two or more ranks
    name: str | None = None                      # the input whose per-sample digests were compared

    @property
    def identical_batches(self) -> bool:
        return self.steps > 0 and len(self.identical_steps) == self.steps

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "identical_batches": self.identical_batches,
                "identical_steps": list(self.identical_steps), "window": self.window, "samples": self.samples,
                "overlap": self.overlap, "input": self.name}

    def sentence(self, world: int) -> str | None:
        """The data-sampling finding in words, or None when the inputs look split as they should be."""
        if self.identical_batches:
            return (f"Every rank trained on the same batches at all {fmt_count(self.steps)} steps: the data is not "
                    f"split across the ranks (each step sees every sample {world} times). Give the DataLoader a "
                    "DistributedSampler (the same seed on every rank), or shard the data by rank.")
        if self.identical_steps:
            return (f"The ranks had the same batch at {fmt_count(len(self.identical_steps))} of "
                    f"{fmt_count(self.steps)} steps (first at step {self.identical_steps[0]}).")
        if self.overlap:
            return (f"{fmt_count(self.overlap)} of the {fmt_count(self.samples)} samples the ranks saw in their first "
                    f"{fmt_count(self.window)} steps were seen by two ranks or more: the shards overlap, as a "
                    "DistributedSampler seeded differently on each rank makes them (its seed must be the same "
                    "everywhere; per-rank seeds are for augmentation and dropout), unless the dataset holds a "
                    "sample twice.")
        return None


@dataclass
class ReplicaCheck:
    """The ranks of one run compared with rank 0, step by step. ``to_dict()`` is the ``--json`` document."""

    traces: list[str]
    world_size: int
    run_id: str | None
    backend: str | None
    consistent: bool | None                      # None: the ranks' parameters cannot be compared
    first_divergence: ReplicaDivergence | None
    steps_compared: int = 0
    events_compared: int = 0
    parted: list[dict[str, int]] = field(default_factory=list)   # per step from the divergence: differing events
    data: DataCheck | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding: the replicas agree (or cannot be compared) and the ranks did not share every batch."""
        return self.consistent is not False and not (self.data is not None and self.data.identical_batches)

    def to_dict(self) -> dict[str, Any]:
        return {"consistent": self.consistent, "ok": self.ok, "sentence": self.sentence(),
                "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
                "ranks": len(self.traces), "world_size": self.world_size, "traces": list(self.traces),
                "run_id": self.run_id, "backend": self.backend, "steps_compared": self.steps_compared,
                "events_compared": self.events_compared, "parted": list(self.parted),
                "data": None if self.data is None else self.data.to_dict(), "notes": list(self.notes)}

    def sentence(self) -> str:
        parts = [self._params_sentence()]
        if self.data is not None:
            said = self.data.sentence(self.world_size)
            if said:
                parts.append(said)
        return " ".join(parts)

    def _params_sentence(self) -> str:
        n = len(self.traces)
        if self.consistent is None:
            return "The replicas could not be compared: " + (self.notes[0] if self.notes else "nothing in common") + "."
        d = self.first_divergence
        if d is None:
            return (f"The {n} replicas hold the same parameters at initialisation and after each of the "
                    f"{fmt_count(self.steps_compared)} steps ({fmt_count(self.events_compared)} parameter digests "
                    "compared with rank 0's, every one equal).")
        others = f" (and rank {', '.join(map(str, d.ranks[1:]))})" if len(d.ranks) > 1 else ""
        if d.phase == "init":
            return (f"The replicas differ at initialisation: rank {d.rank}'s `{d.name}`{others} is not rank 0's "
                    f"({d.amount()}). DDP broadcasts rank 0's parameters when it wraps the model, so the model is "
                    "not wrapped in DistributedDataParallel, or was changed after wrapping: seed init the same on "
                    "every rank (twinrun.seed_everything(S) with one S everywhere) and wrap the model before "
                    "training.")
        last = self.parted[-1] if self.parted else None
        grows = ""
        if last is not None and last["step"] > d.step:
            grows = (f" They stay apart: at step {last['step']}, {fmt_count(last['differing'])} of "
                     f"{fmt_count(last['events'])} parameters differ.")
        return (f"The replicas part at step {d.step}: after that step's update rank {d.rank}'s `{d.name}`{others} "
                f"differs from rank 0's ({d.amount()}); every parameter agreed before it. A rank changed its "
                f"parameters outside the all-reduce during step {d.step}, or after step {d.step - 1}'s update was "
                "recorded (an update made after optimizer.step() shows one step late)." + grows)


def rank_of(t: Trace) -> RankInfo | None:
    """The rank a trace was recorded as (its meta, completed with the backend, else its header)."""
    return RankInfo.from_dict(t.meta("distributed")) or RankInfo.from_dict(t.header.get("distributed"))


def replicas(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> ReplicaCheck:
    """Compare the rank traces of one run: from its base name (``out.trace``), one rank's trace, or a list.

    Bad input (not traces, traces of other launches, one rank only) raises a one-line ``UsageError``
    or ``BadTraceError``.
    """
    found = find_rank_traces(paths)
    with contextlib.ExitStack() as stack:
        traces = [stack.enter_context(Trace.open(p)) for p in found]
        return _check(traces)


def _ranked(traces: list[Trace]) -> tuple[list[Trace], list[RankInfo], list[str]]:
    infos, notes = [], []
    for t in traces:
        info = rank_of(t)
        if info is None:
            raise UsageError(f"{t.path} is not the trace of a rank (its header has no `distributed`); record the "
                             "run with twinrun run --nproc N, or under torchrun, and give its -o path")
        infos.append(info)
    if len(traces) < 2:
        raise UsageError(f"only one rank trace ({traces[0].path}); comparing replicas needs the traces of two ranks "
                         "or more of one run")
    worlds = {i.world_size for i in infos}
    ids = {i.run_id for i in infos if i.run_id}
    if len(worlds) > 1 or len(ids) > 1:
        raise UsageError("these rank traces come from different launches (" + ", ".join(
            f"{t.path.name}: rank {i.rank} of {i.world_size}" + (f", run {i.run_id[:8]}" if i.run_id else "")
            for t, i in zip(traces, infos)) + "); give the traces of one run")
    seen: dict[int, Trace] = {}
    for t, i in zip(traces, infos):
        if i.rank in seen:
            raise UsageError(f"{seen[i.rank].path} and {t.path} are both rank {i.rank}; give one trace per rank")
        seen[i.rank] = t
    world = infos[0].world_size
    missing = [r for r in range(world) if r not in seen]
    if missing:
        notes.append(f"the run had {world} ranks; rank {', '.join(map(str, missing))} not given, so not compared")
    if 0 not in seen:
        notes.append(f"rank 0's trace not given: the others are compared with rank {min(seen)}")
    order = sorted(seen)
    return [seen[r] for r in order], [next(i for i in infos if i.rank == r) for r in order], notes


def _check(traces: list[Trace]) -> ReplicaCheck:
    traces, infos, notes = _ranked(traces)
    common = sorted(set.intersection(*(set(t.steps()) for t in traces)))
    if any(len(t.steps()) != len(common) for t in traces):
        notes.append("the ranks recorded different steps (" + ", ".join(
            f"rank {i.rank}: {len(t.steps())}" for t, i in zip(traces, infos)) + f"); the {len(common)} in common "
            "are compared")
    out = ReplicaCheck([str(t.path) for t in traces], infos[0].world_size, infos[0].run_id,
                       next((i.backend for i in infos if i.backend), None), True, None, notes=notes)
    ref_rank = infos[0].rank
    data_steps: list[list[list[Event]]] = []
    for step in common:
        per_rank = [t.events(step) for t in traces]
        data_steps.append([[e for e in evs if e.phase == "input"] for evs in per_rank])
        mine = [[e for e in evs if e.phase in COMPARED] for evs in per_rank]
        if not _compare_step(step, mine, traces, infos, out):
            break
    if out.consistent and out.events_compared == 0:
        out.consistent = None
        out.notes.insert(0, "no init or param event was recorded (record them: --capture includes init,param)")
    if ref_rank != 0 and out.first_divergence is not None:
        out.notes.append(f"differences are counted from rank {ref_rank}")
    out.data = _data_check(common, data_steps)
    if out.data is None:
        out.notes.append("no per-sample input digests recorded: the data split was not checked")
    return out


def _compare_step(step: int, events: list[list[Event]], traces: list[Trace], infos: list[RankInfo],
                  out: ReplicaCheck) -> bool:
    """Compare one step's parameter events of every rank with the first rank's; False stops the check."""
    ref = events[0]
    keyed = [{(e.phase, e.name): e for e in evs} for evs in events]
    differing = 0
    for e0 in ref:
        first_rank: list[int] = []
        for k in range(1, len(events)):
            ek = keyed[k].get((e0.phase, e0.name))
            if ek is None:
                out.notes.append(f"rank {infos[k].rank} has no `{e0.name}` ({e0.phase}) at step {step}")
                continue
            if ek.shape != e0.shape or ek.dtype != e0.dtype:
                out.consistent = None
                out.first_divergence = None
                out.notes.insert(0, f"at step {step} `{e0.name}` is {e0.dtype}{list(e0.shape)} on rank "
                                    f"{infos[0].rank} but {ek.dtype}{list(ek.shape)} on rank {infos[k].rank}: the "
                                    "ranks hold different parameters (sharded, as FSDP or tensor parallelism do), "
                                    "not replicas")
                return False
            if ek.digest != e0.digest:
                first_rank.append(k)
        out.events_compared += 1
        if not first_rank:
            continue
        differing += e0.phase == "param"
        if out.first_divergence is None:
            k = first_rank[0]
            ek = keyed[k][(e0.phase, e0.name)]
            va = traces[0].value(e0) if e0.has_value else None
            vb = traces[k].value(ek) if ek.has_value else None
            d = event_difference(e0, ek, va, vb)
            out.consistent = False
            out.first_divergence = ReplicaDivergence(
                step, str(e0.phase), e0.name, infos[k].rank, [infos[j].rank for j in first_rank], list(e0.shape),
                e0.dtype, e0.size, d.values, d.differing, d.max_abs, d.max_rel, d.max_ulp, d.stats_a.l2, d.stats_b.l2)
    if out.first_divergence is not None:
        out.parted.append({"step": step, "differing": differing, "events": sum(e.phase == "param" for e in ref)})
    out.steps_compared += 1
    return True


def _data_check(steps: list[int], inputs: list[list[list[Event]]]) -> DataCheck | None:
    """Identical batches across ranks, and samples seen by two ranks within the first epoch."""
    usable = [(s, per_rank) for s, per_rank in zip(steps, inputs) if per_rank and all(per_rank)]
    if not usable:
        return None
    check = DataCheck(steps=len(usable))
    for step, per_rank in usable:
        batches = {tuple(e.digest for e in evs) for evs in per_rank}
        if len(batches) == 1:
            check.identical_steps.append(step)
    # Per-sample digests of the first input that has them (the model's first argument, usually).
    name = next((e.name for e in usable[0][1][0] if e.sample_digests), None)
    if name is None:
        return check
    check.name = name
    seen: list[set[str]] = [set() for _ in usable[0][1]]
    for _, per_rank in usable:
        digests = []
        for evs in per_rank:
            ev = next((e for e in evs if e.name == name), None)
            digests.append(list(ev.sample_digests or []) if ev is not None else [])
        # A rank seeing a sample again has begun another epoch (or the dataset repeats a sample): stop there.
        if any(set(d) & s or len(set(d)) < len(d) for d, s in zip(digests, seen)):
            break
        for d, s in zip(digests, seen):
            s.update(d)
        check.window += 1
    counts = Counter(x for s in seen for x in s)
    check.samples = len(counts)
    check.overlap = sum(1 for n in counts.values() if n > 1)
    return check
