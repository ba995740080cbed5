"""Doctor under ``--nproc N``: the replica check as evidence, and what to try on N ranks.

Every run is N ranks launched through torch.distributed; two runs are compared rank k against rank k
(``experiments``). Before any rerun, the baseline's own rank traces are evidence (``replicas``): ranks
that hold other parameters after a step (``replica-divergence``), or that all trained on the same
batches (``data-pipeline``, ``same-batches-on-every-rank``), need no experiment to be seen.

What changes numbers on N ranks, measured (docs/distributed.md): the thread count per rank (torchrun
sets ``OMP_NUM_THREADS=1`` unless it is set; doctor's thread-count rerun tries 2), deterministic mode
and seeding per rank (the usual experiments, applied on every rank), and on 3 ranks or more the DDP
bucket layout, which decides where each gradient sits in the buffer gloo sums (``ddp-small-buckets``).
On 2 ranks gloo adds two values, ``a + b == b + a``, and no layout can change a number: not tried.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..comparison.replicas import ReplicaCheck, replicas
from .experiments import Plan
from .model import Cause, Diagnosis, Experiment, Verdict, Where

__all__ = ["BUCKETS", "bucket_plan", "rank_threads", "replica_diagnosis", "replica_evidence"]

BUCKETS = Plan("ddp-small-buckets", "one parameter per DDP gradient bucket (another all-reduce layout)",
               interventions=("ddp-small-buckets",), cause="ddp-buckets",
               advice="Pin DDP's bucket layout (`bucket_cap_mb`, `static_graph`, `find_unused_parameters`) the same on "
                      "every machine and rank count: on 3 ranks or more gloo sums each gradient in an order that "
                      "depends on its place in the bucket.")


def replica_evidence(baseline: Experiment) -> tuple[Experiment, ReplicaCheck]:
    """The replica check of the baseline's first run, as an experiment that needed no rerun."""
    check = replicas(baseline.traces[0])
    exp = Experiment("replicas", "nothing: the ranks of the first baseline run compared with rank 0 (digests)",
                     identical=check.consistent, runs=0, compared_with="rank 0 of the same run",
                     note=check.sentence())
    d = check.first_divergence
    if d is not None:
        exp.rank = d.rank
        exp.first_divergence = Where(d.step, d.phase, d.name, shape=list(d.shape), differing=d.differing,
                                     max_abs=d.max_abs, max_ulp=d.max_ulp)
    return exp, check


def replica_diagnosis(script: Path, baseline: Experiment, check: ReplicaCheck, evidence: list[Experiment]
                      ) -> Diagnosis | None:
    """The diagnosis the replica check alone establishes, or None when it finds nothing."""
    d = check.first_divergence
    if check.consistent is False and d is not None:
        fix = ("Keep every change of the parameters inside DDP: update the model only through the optimizer "
               "step after the all-reduce (no rank-dependent update, gradient scaling or clipping by a local norm, "
               "no forgotten `no_sync()` step); "
               + ("wrap the model in DistributedDataParallel before the first forward and seed init the same on every "
                  "rank (`twinrun.seed_everything(S)` with one S)." if d.phase == "init" else
                  f"look at what changes `{d.name}` on rank {d.rank} at step {d.step} (or right after step "
                  f"{d.step - 1}'s optimizer step)."))
        repeat = "the runs repeat each other" if baseline.identical else "the runs also part from each other"
        summary = (f"{check.sentence()} {repeat.capitalize()}, but a data-parallel run must hold one model on every "
                   "rank: the ranks now train different models, and whichever rank saves the checkpoint decides "
                   "the result.")
        return Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, Cause.REPLICA_DIVERGENCE,
                         f"rank {d.rank}, `{d.name}`, step {d.step}", baseline.first_divergence, fix, evidence, None,
                         True, summary)
    if check.data is not None and check.data.identical_batches:
        fix = ("Split the data across ranks: give the DataLoader a `DistributedSampler(dataset, seed=S)` with the "
               "same S on every rank (and call `sampler.set_epoch(epoch)` each epoch), instead of shuffling the whole "
               "dataset with one seed on every rank.")
        return Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, Cause.DATA_PIPELINE, "same-batches-on-every-rank",
                         baseline.first_divergence, fix, evidence, None, True,
                         f"{check.sentence()} The replicas agree and the loss falls, so nothing else shows it; "
                         "the per-sample input digests of the ranks' traces prove it.")
    return None


def rank_threads() -> int:
    """The threads per rank of a run launched by torchrun: ``OMP_NUM_THREADS`` if set, else torchrun's 1."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


def bucket_plan(nproc: int) -> tuple[Plan | None, dict[str, Any]]:
    """The bucket-layout rerun on 3 ranks or more; on 2 ranks why there is none."""
    if nproc >= 3:
        return BUCKETS, {"ranks": nproc}
    return None, {"ranks": nproc, "stable": True, "runs": [],
                  "note": "on 2 ranks gloo adds two values and a + b == b + a: no bucket layout can change a number "
                          "(measured), so none was tried"}
