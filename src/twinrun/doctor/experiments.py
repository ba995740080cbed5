"""Running doctor's experiments: each plan is a set of launch options; its runs are fresh processes.

A :class:`Plan` says what one experiment changes (a seed, environment variables, deterministic
kernels, a thread count, interventions) and in words what that is. The :class:`ExperimentRunner`
launches each plan's runs (two at a time by default), stops the diagnosis when a run fails, and
turns each pair of runs (or each run against a reference trace) into an :class:`Experiment`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .._display import shown
from .._errors import ScriptFailedError, UsageError
from ..comparison import diff
from ..frameworks.base import Variant
from ..options import RunOptions
from ..redact import redact_text
from ..runner import RunResult, launch
from ..seeding import ENV_ROOT
from .model import Act, Experiment

__all__ = ["PARALLEL", "ExperimentRunner", "Plan"]

PARALLEL = 2 if (os.cpu_count() or 1) >= 2 else 1


@dataclass(frozen=True)
class Plan:
    """One rerun: launch options plus a label that says what was changed."""

    name: str
    changed: str
    seed: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    deterministic: bool = False
    threads: int | None = None
    interventions: tuple[str, ...] = ()
    cause: str = ""       # a framework setting's: what a difference would mean (Variant.cause)
    advice: str = ""      # and what to do then (Variant.advice)

    @classmethod
    def of(cls, v: Variant, changed: str | None = None) -> Plan:
        """The rerun of a framework's setting (``Variant``)."""
        return cls(v.name, changed or v.note, env=dict(v.env), threads=v.threads, interventions=v.interventions,
                   cause=v.cause, advice=v.advice)

    def shell(self) -> str:
        """The plan's settings as a command-line prefix: ``VAR=value OMP_NUM_THREADS=2``."""
        parts = [f"{k}={v}" for k, v in self.env.items()]
        if self.threads is not None:
            parts.append(f"OMP_NUM_THREADS={self.threads}")
        return " ".join(parts)


class ExperimentRunner:
    """Launches the runs of doctor's experiments, in fresh processes, ``parallel`` at a time."""

    def __init__(self, options: RunOptions, workdir: str, parallel: int, timeout: float | None,
                 say: Callable[[str], None]):
        self.options = options          # the script, its arguments and max_steps
        self.workdir, self.parallel, self.timeout, self.say = workdir, parallel, timeout, say
        self.launched = 0
        self._n = 0

    @property
    def max_steps(self) -> int:
        return self.options.record.max_steps or 0

    def run(self, jobs: list[tuple[Plan, int]]) -> list[RunResult]:
        """Launch each (plan, copy) and return their results in order; a failed run stops the diagnosis."""

        def one(job: tuple[Plan, int]) -> RunResult:
            plan, copy = job
            self._n += 1
            path = os.path.join(self.workdir, f"{self._n:02d}-{_slug(plan.name)}-{copy}.trace")
            interventions = plan.interventions
            if copy == 2 and "fixed-clock" not in interventions:
                # the pair starts in one instant: its second run reads the program's clock a day later, as a
                # rerun would, or a seed of int(time.time()) would repeat between them by coincidence
                interventions = (*interventions, "later-clock")
            opts = self.options.replace(output=path, seed=plan.seed, deterministic=plan.deterministic,
                                        threads=plan.threads, interventions=interventions)
            env = dict(plan.env)
            if plan.seed is not None and os.environ.get(ENV_ROOT):
                env[ENV_ROOT] = str(plan.seed)   # one carrier: the experiment's seed, not a second one
            return launch(opts, env=env or None, timeout=self.timeout)

        with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            futures = [pool.submit(one, job) for job in jobs]
            results = []
            try:
                for job, fut in zip(jobs, futures):
                    r = fut.result()
                    self.launched += 1
                    _check_run(job[0], job[1], r)
                    results.append(r)
            except BaseException:   # runs not started yet are cancelled
                for f in futures:
                    f.cancel()
                raise
        return results

    def pairs(self, plans: list[Plan]) -> list[Experiment]:
        """Each plan twice; an experiment per plan comparing its two runs."""
        t0 = time.perf_counter()
        for p in plans:
            self.say(f"doctor: {p.name}: {p.changed} (2 runs)")
        results = self.run([(p, c) for p in plans for c in (1, 2)])
        out = []
        for i, p in enumerate(plans):
            a, b = results[2 * i], results[2 * i + 1]
            exp = Experiment(p.name, p.changed, runs=2, traces=[a.trace_path, b.trace_path], acted=_acts(a, b),
                             steps=[a.steps, b.steps])
            self._fill(exp, a.trace_path, b.trace_path)
            exp.seconds = round(time.perf_counter() - t0, 2)
            out.append(exp)
        return out

    def _fill(self, exp: Experiment, a: str, b: str) -> None:
        _fill(exp, a, b, self.options.nproc)

    def singles(self, plans: list[Plan], reference: str, label: str) -> list[Experiment]:
        """Each plan once, compared with ``reference`` (a trace path)."""
        t0 = time.perf_counter()
        for p in plans:
            self.say(f"doctor: {p.name}: {p.changed} (1 run)")
        results = self.run([(p, 1) for p in plans])
        out = []
        for p, r in zip(plans, results):
            exp = Experiment(p.name, p.changed, runs=1, traces=[r.trace_path], compared_with=label, acted=_acts(r),
                             steps=[r.steps])
            self._fill(exp, reference, r.trace_path)
            exp.seconds = round(time.perf_counter() - t0, 2)
            out.append(exp)
        return out


def _fill(exp: Experiment, a: str, b: str, nproc: int | None) -> None:
    """Compare two runs: their traces, or under ``--nproc`` rank k of one with rank k of the other (the rank
    that parts first leads)."""
    if nproc is None:
        exp.fill(diff(a, b))
        return
    from ..comparison import diff_ranks
    from ..ranks import find_rank_traces

    rank, c = diff_ranks(find_rank_traces(a), find_rank_traces(b))
    exp.fill(c)
    if not c.identical:
        exp.rank = rank
        exp.note = f"rank {rank}: {c.sentence()}"


def _acts(*results: RunResult) -> list[Act]:
    """The interventions' acts the runs reported, each call site once, first seen first."""
    out: dict[tuple[str, str], Act] = {}
    for r in results:
        for report in r.acts("intervention"):
            act = Act.of(report)
            out.setdefault((act.name, act.site), act)
    return list(out.values())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "run"


def _check_run(plan: Plan, copy: int, r: RunResult) -> None:
    """A run that failed stops the diagnosis with exit 3, naming the experiment; a run without a step
    stops it with exit 2 (no cause can be read from runs that recorded nothing)."""
    if r.steps == 0 and r.status in ("complete", "stopped") and r.exit_code in (0, 1, 2):
        raise UsageError(f"cannot diagnose: in experiment '{plan.name}' the script ran but {r.no_step_reason()}")
    if r.status == "timeout":
        raise ScriptFailedError(f"the script did not finish in experiment '{plan.name}' ({plan.changed}), "
                                f"run {copy}: killed after the time limit; raise --timeout or lower --max-steps")
    if r.exit_code in (0, 1) and r.status not in ("failed", "missing"):
        return
    lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip() and not ln.startswith(
        ("twinrun intervention", "twinrun run:"))]
    last = redact_text(lines[-1].strip()) if lines else f"exit code {r.exit_code}"
    if r.exit_code == 2:
        # the child's own one-line reason (an output it may not write, a bad reference)
        reasons = [ln.split("error:", 1)[1].strip() for ln in (r.stderr or "").splitlines()
                   if ln.startswith("twinrun run: error:")]
        why = shown(redact_text(reasons[-1]), 600) if reasons else last
        raise UsageError(f"twinrun could not start the script in experiment '{plan.name}': {why}")
    raise ScriptFailedError(f"the script failed in experiment '{plan.name}' ({plan.changed}), run {copy}: "
                            f"{last} (its trace: {r.trace_path})")


def frameworks_of(trace_path: str | os.PathLike[str]) -> list[str]:
    """The frameworks a traced run used (stored at close); a trace without that record is read as a
    PyTorch run, as traces were before TensorFlow and JAX were covered."""
    from .._errors import BadTraceError
    from ..trace import Trace

    try:
        with Trace.open(Path(trace_path)) as t:
            names = t.meta("frameworks")
    except BadTraceError:
        names = None
    return [str(n) for n in names] if isinstance(names, list) else ["numpy", "torch"]
