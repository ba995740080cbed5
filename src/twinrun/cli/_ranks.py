"""``twinrun run --nproc N`` and ``twinrun check --nproc N`` in the parent: launch the ranks through
torch.distributed, show each rank's outcome; compare rank k of one run with rank k of the other, and
each run's replicas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._errors import UsageError
from ..options import RunOptions
from ..runner import RunResult, default_trace_path
from ._output import console, emit_json, progress

__all__ = ["check_ranks", "rank_lines", "run_ranks"]


def run_ranks(args: argparse.Namespace, options: RunOptions) -> int:
    """Run the script as ``options.nproc`` ranks; one line per rank; the worst rank's exit code."""
    from ..runner import launch

    assert options.nproc is not None
    output = options.output or default_trace_path()
    progress(args, f"twinrun run: {options.nproc} ranks of {Path(options.script).name} through torch.distributed "
                   "(the script's output follows when they end) ...")
    r = launch(options.replace(output=output))
    # The ranks' own output, after the fact (torchrun's is captured so that no rank's line is lost).
    (sys.stderr if args.json else sys.stdout).write(r.stdout)
    sys.stderr.write(r.stderr)
    if args.json:
        emit_json(r)
    else:
        for line in rank_lines(r):
            progress(args, f"twinrun run: {line}")
    for note in r.notes:
        print(f"twinrun run: note: {note}", file=sys.stderr)
    return r.exit_code


def rank_lines(r: RunResult) -> list[str]:
    """One line per rank: its trace, steps and how it ended."""
    out = []
    for rr in r.ranks:
        how = {"complete": "complete", "stopped": "stopped at --max-steps", "diverged": "parted from the reference",
               "failed": "failed", "missing": "no trace"}.get(rr.status, rr.status)
        line = f"rank {rr.rank}: {rr.trace_path} ({rr.steps} steps, {how})"
        if rr.error and rr.exit_code not in (0, 1):
            line += f": {rr.error}"
        out.append(line)
    return out


# --- check --nproc N ---------------------------------------------------------------------------------

def check_ranks(args: argparse.Namespace, options: RunOptions, runs: int, folder: Path, timeout: float | None,
                against: str | None, keep: bool) -> tuple[int, bool]:
    """``check --nproc N``: launch the runs, compare rank k of one run with rank k of the other, check each
    run's replicas. Returns the exit code and whether the traces must be kept (a run failed)."""
    from .. import ranks
    from ..comparison import Comparison, diff
    from ..comparison.replicas import replicas
    from ..runner import launch
    from ..trace import Trace
    from .report import write_page

    assert options.nproc is not None
    n = options.nproc
    refs: list[str] = []
    if against is not None:   # a bad reference: one line, before any launch
        refs = ranks.find_rank_traces(against)
        if len(refs) != n:
            raise UsageError(f"the reference {against} has {len(refs)} rank trace(s), this run {n}; compare runs "
                             "of one rank count (or diff one rank's trace with a 1-process trace)")
        for ref in refs:
            Trace.open(ref).close()
    results: list[RunResult] = []
    count = 1 if against else runs
    for i in range(1, count + 1):
        progress(args, f"twinrun check: run {i}/{count} of {Path(options.script).name}, {n} ranks through "
                       "torch.distributed ...")
        r = launch(options.replace(output=str(folder / f"run-{i}.trace")), timeout=timeout)
        results.append(r)
        progress(args, f"twinrun check: run {i}/{count} finished: {r.status} in {r.seconds:.1f} s")
        failed = _rank_failure(args, r, i)
        if failed is not None:
            return failed, True
    if against is not None:
        pairs = [[(refs[k], results[0].ranks[k].trace_path) for k in range(n)]]
    else:
        pairs = [[(results[0].ranks[k].trace_path, r.ranks[k].trace_path) for k in range(n)] for r in results[1:]]
    comparisons: list[list[Comparison]] = [[diff(a, b) for a, b in run_pairs] for run_pairs in pairs]
    identical = all(c.identical for run in comparisons for c in run)
    lead_run, lead_rank = _lead(comparisons)
    lead = comparisons[lead_run][lead_rank]
    checks = [replicas(r.trace_paths) for r in results]
    parted = next((c for c in checks if c.consistent is False), None)
    finding = next((c for c in checks if not c.ok), None)
    doc = lead.to_dict()
    if not lead.identical:
        doc["sentence"] = f"Rank {lead_rank}: {doc['sentence']}"
    doc.update(identical=identical, rank=lead_rank, nproc=n, script=str(options.script), args=list(options.args),
               against=against, traces_kept=str(folder) if keep else None,
               runs=[{"returncode": r.exit_code, "traces": r.trace_paths, "status": r.status,
                      "seconds": round(r.seconds, 3), "notes": list(r.notes)} for r in results],
               ranks=[{**c.to_dict(), "rank": k, "a": str(a), "b": str(b)} for run_pairs, run in zip(pairs, comparisons)
                      for k, ((a, b), c) in enumerate(zip(run_pairs, run))],
               replicas={"consistent": None if any(c.consistent is None for c in checks) and parted is None
                         else parted is None,
                         "ok": finding is None,
                         "first_divergence": None if parted is None or parted.first_divergence is None
                         else {**parted.first_divergence.to_dict(), "run": checks.index(parted) + 1},
                         "ranks": n, "sentence": (finding or checks[0]).sentence(),
                         "runs": [c.to_dict() for c in checks]})
    a, b = pairs[lead_run][lead_rank]
    write_page(args, "check", doc, a=str(a), b=str(b))
    if args.json:
        emit_json(doc)
    else:
        render_ranks(lead, lead_rank, n, finding or checks[0])
    for r in results:
        for note in r.notes:
            print(f"twinrun check: note: {note}", file=sys.stderr)
    return (0 if identical and finding is None else 1), False


def _lead(comparisons: list[list[Any]]) -> tuple[int, int]:
    """The (run, rank) whose comparison parts first (earliest step, then event, then rank); (0, 0) if none."""
    best: tuple[tuple[int, int, int], int, int] | None = None
    for i, run in enumerate(comparisons):
        for k, c in enumerate(run):
            d = c.first_divergence
            if d is not None:
                where = (d.step, d.index, k)
            elif c.structural:
                where = (c.structural[0].step or 0, c.structural[0].index or 0, k)
            else:
                continue
            if best is None or where < best[0]:
                best = (where, i, k)
    return (0, 0) if best is None else (best[1], best[2])


def render_ranks(lead: Any, rank: int, n: int, check: Any) -> None:
    """The lead rank's comparison (named by its rank), then the replica check."""
    from rich.text import Text

    from .replicas import render_replicas
    from .views import render_comparison

    out = console()
    if lead.identical:
        out.print(Text(f"Every rank repeats ({n} ranks, rank k of one run against rank k of the other):",
                       style="bold"))
    else:
        out.print(Text(f"Rank {rank} parts first (of {n} ranks, rank k of one run against rank k of the other):",
                       style="bold"))
    render_comparison(lead, out)
    render_replicas(check, out)


def _rank_failure(args: argparse.Namespace, r: RunResult, i: int) -> int | None:
    """The exit code when run ``i`` gave no comparable rank traces, after saying which rank failed and why."""
    if r.stepless:
        why = r.no_step_reason()
        if args.json:
            emit_json({"identical": None, "no_step": True, "failed_run": i, "reason": why})
        print(f"twinrun check: run {i} of the script: {why}", file=sys.stderr)
        return 2
    if r.exit_code in (0, 1) and r.status in ("complete", "stopped", "diverged"):
        return None
    sys.stderr.write(r.stderr)
    for line in rank_lines(r):
        print(f"twinrun check: run {i}: {line}", file=sys.stderr)
    for note in r.notes:
        print(f"twinrun check: run {i}: note: {note}", file=sys.stderr)
    if args.json:
        emit_json({"identical": None, "script_failed": r.exit_code != 2, "failed_run": i,
                   "ranks": [rr.to_dict() for rr in r.ranks], "stderr_tail": r.stderr[-4000:]})
    code = 2 if r.exit_code == 2 else 3
    print(f"twinrun check: run {i} " + ("could not start the script" if code == 2 else
          ("timed out" if r.status == "timeout" else "failed")) + f"; its traces are kept next to {r.trace_path}",
          file=sys.stderr)
    return code
