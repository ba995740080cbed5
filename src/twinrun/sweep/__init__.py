"""Many seeded runs of one script, and their results file.

``sweep(script, seeds=20, vary="init", output="results.db")`` runs the script once per seed in a
fresh process, changing only twinrun's seed variables (``plan``), and collects what the script
reports with ``twinrun.log_metric`` into an SQLite results file (``results``). Runs go to any
``concurrent.futures.Executor`` (``executors``); ``compare_sweeps`` says whether A beats B.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any

from .. import _process
from ..env import capture
from ..options import timeout_seconds
from .compare import ResultsComparison, compare_sweeps
from .executors import open_executor
from .plan import DESIGNS, VARIANCE_ARMS, PlannedRun, plan, script_identity
from .results import SCHEMA_VERSION, Results
from .run import RunSpec, SweepRun, run_one
from .summary import finite_values, variance_report

__all__ = ["DESIGNS", "SCHEMA_VERSION", "VARIANCE_ARMS", "PlannedRun", "Results", "ResultsComparison", "RunSpec",
           "SweepResult", "SweepRun", "compare_sweeps", "finite_values", "open_executor", "plan", "run_one",
           "script_identity", "sweep", "variance_report"]


@dataclass
class SweepResult:
    """What a sweep did: counts, and per arm and metric n / mean / std of the finished runs."""

    path: str
    total: int
    ran: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    design: str
    arms: dict[str, dict[str, Any]]  # arm -> {metric: {"n", "mean", "std", "excluded"}}
    failures: list[dict[str, Any]] = field(default_factory=list)  # [{"arm", "idx", "seed", "error"}]
    variance: dict[str, Any] | None = None  # metric -> VarianceShares.to_dict() for the variance design

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sweep(script: str | os.PathLike[str], args: Sequence[Any] = (), *, seeds: int = 10, vary: str = "all",
          design: str = "single", base_seed: int = 0, output: str | os.PathLike[str] = "results.db", workers: int = 1,
          executor: str | Executor | None = None, timeout: float | None = None, retry_failed: bool = False,
          dask_timeout: float = 10.0, n_resamples: int = 2000,
          on_progress: Callable[[int, int, SweepRun], None] | None = None) -> SweepResult:
    """Run ``script`` once per seed in fresh processes and record the results in ``output``.

    Runs already recorded in ``output`` are skipped (failed ones too, unless ``retry_failed``); a
    failed run is recorded with its error and the sweep goes on. ``KeyboardInterrupt`` stops the
    running scripts and leaves the file consistent (every recorded run is complete).
    """
    started = time.time()
    timeout = timeout_seconds(timeout)
    runs = plan(seeds, vary=vary, design=design, base_seed=base_seed)
    identity = script_identity(script, args)
    design_meta = {"design": design, "vary": None if design == "variance" else vary, "base_seed": base_seed}
    with Results.create(output, identity, design_meta, capture) as results:
        done = results.done()
        settled = {"ok"} if retry_failed else {"ok", "failed"}
        todo = [r for r in runs if done.get((r.arm, r.idx)) not in settled]
        skipped = len(runs) - len(todo)
        ran = 0
        results.set_state("running")
        with open_executor(executor, workers=workers, dask_timeout=dask_timeout) as pool:
            futures: dict[Future[SweepRun], PlannedRun] = {}
            try:
                for r in todo:
                    spec = RunSpec(r, identity["script"], identity["script_sha256"], tuple(map(str, args)),
                                   timeout=timeout, cwd=os.getcwd())
                    futures[pool.submit(run_one, spec)] = r
                pending = set(futures)
                while pending:
                    completed, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in completed:
                        rec = _result_of(fut, futures[fut])
                        if rec.status == "interrupted":
                            continue
                        results.add(rec)
                        ran += 1
                        if on_progress:
                            on_progress(skipped + ran, len(runs), rec)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                _process.kill_all()
                results.set_state("interrupted")
                raise
        results.set_state("complete")
        return _summarize_sweep(results, runs, ran, skipped, time.time() - started, design, n_resamples)


def _result_of(fut: Future[SweepRun], run: PlannedRun) -> SweepRun:
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - a worker boundary (a Dask worker died): record the run as failed, go on
        return SweepRun(run.arm, run.idx, run.seed, dict(run.env), "failed", None,
                        f"worker error: {type(e).__name__}: {e}", 0.0, None)


def _summarize_sweep(results: Results, runs: list[PlannedRun], ran: int, skipped: int, seconds: float, design: str,
                     n_resamples: int) -> SweepResult:
    import numpy as np

    planned = {(r.arm, r.idx) for r in runs}
    recs = [r for r in results.runs() if (r.arm, r.idx) in planned]
    arms: dict = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [r for r in recs if r.arm == arm]
        names = sorted({n for r in mine for n in r.metrics})
        arms[arm] = {}
        for name in names:
            vals, excluded = finite_values(mine, name)
            arms[arm][name] = {"n": len(vals), "mean": float(np.mean(vals)) if vals else math.nan,
                               "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                               "excluded": excluded}
    failures = [{"arm": r.arm, "idx": r.idx, "seed": r.seed, "error": (r.error or "")[-300:]}
                for r in recs if r.status != "ok"]
    variance = None
    if design == "variance":
        variance = variance_report(recs, n_resamples=n_resamples)
    return SweepResult(str(results.path), len(runs), ran, skipped, sum(r.status == "ok" for r in recs),
                       len(failures), seconds, design, arms, failures, variance)
