"""Runs of N ranks: ``twinrun run`` as one rank of a launch, and a launch of N ranks seen from the parent.

**In a rank** (``twinrun run`` started by torchrun, by ``--nproc`` or by the user's own ``torchrun``):
:func:`as_rank` gives the options their per-rank paths (``-o out.trace`` writes ``out.rank<R>.trace``;
``--against REF.trace`` reads ``REF.rank<R>.trace`` when it exists) and keeps every rank recording to
the end of an ``--against`` run, since a rank that stops alone breaks its peers' next all-reduce.
After the script, :func:`finish_rank` shuts down the process group the script left started (a
``--max-steps`` stop gives it no chance to) and reports the rank's outcome through ``_channel``;
:func:`leave` ends the process with ``os._exit`` once the atexit handlers have run, because gloo's
threads can abort the interpreter's own exit with SIGABRT after a successful run (measured:
docs/distributed.md), and torchrun would report that as the run failing.

**In the parent** (:func:`collect`): torchrun exits 1 whenever a rank fails, whatever the rank's own
code, so each rank's result comes from its report line, never from the launcher's code or log.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import _channel, ranks
from .._errors import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED, UsageError
from ..options import RunOptions
from .result import RunResult

__all__ = ["as_rank", "collect", "combine", "default_rank_base", "exit_code_of_rank", "finish_rank", "leave",
           "report_failure"]

REPORT_KIND = "rank"
# Worst first: how the statuses of N ranks combine into the run's.
_STATUS_ORDER = ("timeout", "missing", "failed", "running", "diverged", "stopped", "complete")


# --- in a rank -------------------------------------------------------------------------------------

def default_rank_base(info: ranks.RankInfo) -> str:
    """The base trace name of a rank run without ``-o``: one for every rank of the launch."""
    if info.run_id and info.run_id != "none":
        return f"twinrun-{info.run_id[:12]}.trace"
    # Without a launch id the ranks agree on the minute they started in, nearly always.
    return time.strftime("twinrun-%Y%m%d-%H%M.trace")


def as_rank(options: RunOptions, info: ranks.RankInfo) -> RunOptions:
    """The options of this rank: its own trace path and reference, and no early stop of one rank alone."""
    if options.nproc is not None:
        raise UsageError(f"--nproc under a launcher: this process is already rank {info.rank} of {info.world_size} "
                         "(RANK and WORLD_SIZE are set); drop --nproc, the launcher starts the ranks")
    out = ranks.rank_path(options.output or default_rank_base(info), info.rank)
    changes: dict[str, Any] = {"output": out}
    against = options.record.against
    if against is not None:
        split = ranks.split_rank_path(against)
        mine = ranks.rank_path(split[0] if split is not None else against, info.rank)
        if Path(mine).exists():   # REF.trace or REF.rank0.trace: this rank compares with REF.rank<R>.trace
            changes["against"] = mine
        if not options.record.keep_going:
            changes["keep_going"] = True
            if info.rank == 0:
                print("twinrun run: under a multi-process launcher every rank records to the end with --against: "
                      "a rank stopped alone at its divergence would break its peers' next all-reduce",
                      file=sys.stderr)
    return options.replace(**changes)


def finish_rank(result: RunResult, info: ranks.RankInfo) -> None:
    """After the script: shut down the process group it left started, then report this rank's outcome."""
    from .. import frameworks

    if result.exit_code != EXIT_SCRIPT_FAILED:
        # A failed rank skips it: its peers may be inside a collective that will never complete.
        try:
            frameworks.end_process_groups()
        except Exception as e:  # noqa: BLE001 - the run is over and recorded; a failing shutdown must not hide it
            result.notes.append(f"shutting down the process group failed ({type(e).__name__}: {e})")
    _channel.report(REPORT_KIND, rank=info.rank, world_size=info.world_size, exit_code=result.exit_code,
                    status=result.status, steps=result.steps, trace=result.trace_path, error=result.error,
                    stop_reason=result.stop_reason, divergence=result.divergence, notes=list(result.notes),
                    seconds=round(result.seconds, 3))


def report_failure(info: ranks.RankInfo, error: Exception) -> None:
    """Report a rank that could not run the script (bad options, an unreadable reference)."""
    code = getattr(error, "exit_code", EXIT_BAD_INPUT)
    _channel.report(REPORT_KIND, rank=info.rank, world_size=info.world_size, exit_code=code, status="missing",
                    steps=0, trace=None, error=str(error), stop_reason=None, divergence=None, notes=[], seconds=0.0)


def leave(code: int) -> None:
    """End this rank's process with ``code``: the atexit handlers and non-daemon threads first, as a normal
    exit would, then ``os._exit``, which skips the interpreter's finalization where gloo can abort."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon and t.is_alive():
            t.join()
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def exit_code_of_rank(code: int) -> int:
    """The code a rank launched by twinrun exits with: a divergence from ``--against`` is in its report,
    and exiting 1 would make torchrun stop the ranks still finishing their traces."""
    if os.environ.get(ranks.ENV_LAUNCHER) and code == EXIT_DIFFERENT:
        return EXIT_OK
    return code


# --- in the parent ---------------------------------------------------------------------------------

def collect(base: str, nproc: int, reports: list[dict[str, Any]], returncode: int, timed_out: bool,
            trace_facts: Any) -> tuple[list[RunResult], list[str]]:
    """Each rank's result, from its report line (or, without one, from its trace), and notes on the launch."""
    by_rank: dict[int, dict[str, Any]] = {}
    for r in reports:
        if r.get("kind") == REPORT_KIND and isinstance(r.get("rank"), int):
            by_rank.setdefault(int(r["rank"]), r)
    order = [int(r["rank"]) for r in reports if r.get("kind") == REPORT_KIND and isinstance(r.get("rank"), int)]
    results: list[RunResult] = []
    notes: list[str] = []
    for k in range(nproc):
        path = ranks.rank_path(base, k)
        rep = by_rank.get(k)
        if rep is not None:
            results.append(RunResult(int(rep.get("exit_code", EXIT_SCRIPT_FAILED)), path, str(rep.get("status")),
                                     steps=int(rep.get("steps") or 0), seconds=float(rep.get("seconds") or 0.0),
                                     error=rep.get("error"), stop_reason=rep.get("stop_reason"),
                                     divergence=rep.get("divergence"), notes=list(rep.get("notes") or []),
                                     rank=k))
            continue
        status, steps, divergence, seen = ("timeout", 0, None, {}) if timed_out else trace_facts(path)
        why = ("killed after the time limit" if timed_out else
               "it ended without reporting: it died, or torchrun stopped it after another rank failed")
        results.append(RunResult(EXIT_SCRIPT_FAILED, path, status, steps=steps, divergence=divergence, seen=seen,
                                 error=f"rank {k}: {why}", rank=k))
    failed_first = next((k for k in order if by_rank[k].get("exit_code") == EXIT_SCRIPT_FAILED), None)
    if failed_first is not None:
        notes.append(f"rank {failed_first} failed first: {by_rank[failed_first].get('error')}")
    finished = all(r.exit_code in (EXIT_OK, EXIT_DIFFERENT) for r in results)
    if returncode != 0 and finished and not timed_out:
        notes.append(f"the launcher exited {returncode} after every rank had reported a finished run: a rank died "
                     "after its trace was complete (at interpreter exit); the traces are whole")
    return results, notes


def combine(results: list[RunResult]) -> tuple[int, str]:
    """The exit code and status of a run of N ranks: the worst rank's."""
    codes = {r.exit_code for r in results}
    if EXIT_SCRIPT_FAILED in codes or any(r.exit_code not in (0, 1, 2, 3) for r in results):
        code = EXIT_SCRIPT_FAILED
    elif EXIT_BAD_INPUT in codes:
        code = EXIT_BAD_INPUT
    elif EXIT_DIFFERENT in codes:
        code = EXIT_DIFFERENT
    else:
        code = EXIT_OK
    status = min((r.status for r in results),
                 key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 0)
    return code, status
