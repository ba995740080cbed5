"""``twinrun run`` (record a script's trace) and ``twinrun check`` (does it repeat? where does it part?)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .._display import shown, shown_lines
from .._errors import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED, TwinrunError, UsageError
from ..options import RunOptions, add_run_arguments, add_script_argument, positive_int
from ..redact import redact_argv
from ..runner import RunResult
from ._output import console, emit_json, progress
from .report import add_html_argument, check_html, write_page
from .views import render_comparison

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a script unchanged and record its trace",
                       description="Run SCRIPT as 'python SCRIPT ARGS' would, recording every training "
                                   "step (PyTorch: zero code changes) to a trace file.")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="trace file to write (default twinrun-<timestamp>.trace)")
    add_run_arguments(p)
    add_script_argument(p)
    p.set_defaults(func=cmd_run)

    c = sub.add_parser("check", parents=[common], help="run a script in fresh processes: does it repeat?",
                       description="Run SCRIPT in fresh processes (as you would) and compare their traces; "
                                   "name the first step, phase and layer where they part.")
    c.add_argument("--runs", metavar="N", default="2", help="how many runs to compare (default 2)")
    c.add_argument("--keep-traces", metavar="DIR", default=None, help="keep the traces in DIR")
    add_html_argument(c)
    add_run_arguments(c)
    add_script_argument(c)
    c.set_defaults(func=cmd_check)


# --- run -----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .. import ranks

    rank = ranks.current()
    if rank is None:
        options = RunOptions.from_namespace(args)
        if options.nproc is not None:
            from ._ranks import run_ranks

            return run_ranks(args, options)
        return _run_here(args, options)
    # One rank of a multi-process launch: whatever happens, the parent hears of it, and the process
    # leaves by runner.distributed.leave.
    from ..runner.distributed import exit_code_of_rank, leave, report_failure

    try:
        code = _run_here(args, RunOptions.from_namespace(args), rank)
    except TwinrunError as e:
        report_failure(rank, e)
        print(f"twinrun run: error: {e}", file=sys.stderr)
        code = e.exit_code
    leave(exit_code_of_rank(code))
    return code   # not reached


def _run_here(args: argparse.Namespace, options: RunOptions, rank: Any = None) -> int:
    from ..runner import run_script

    saved = None
    if args.json:
        # stdout carries only the JSON document: the script's prints go to stderr.
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        result = run_script(options)
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    if result.stepless:   # the script ran, but its trace can be compared with nothing: say why, what to do
        print(f"twinrun run: warning: {result.no_step_reason()}; the trace {result.trace_path} holds no step",
              file=sys.stderr)
    if args.json:
        emit_json(result)
    else:
        def steps(n: int | None) -> str:
            return f"{n} step{'' if n == 1 else 's'}"

        how = {"complete": "complete", "stopped": f"stopped after {steps(options.record.max_steps)}",
               "diverged": "stopped at the first divergence from the reference",
               "failed": "failed"}.get(result.status, result.status)
        who = "" if rank is None else f"rank {rank.rank}/{rank.world_size}: "
        if rank is None or rank.launcher != "twinrun --nproc":   # under --nproc the parent says it
            progress(args, f"twinrun run: {who}trace {result.trace_path} ({steps(result.steps)}, {how}, "
                           f"{result.seconds:.1f} s)")
    if result.stop_reason == "timeout":   # a failure: said even with --quiet
        print(f"twinrun run: the script timed out after {options.timeout:g} s (--timeout); its trace up to the "
              f"last completed step is kept at {result.trace_path}", file=sys.stderr)
    return result.exit_code


# --- check ---------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from ..comparison import diff
    from ..runner import launch, open_reference

    options = RunOptions.from_namespace(args, output=None)
    script = Path(options.script)
    runs = positive_int("runs", args.runs, allow_none=False)
    assert runs is not None
    against = options.record.against
    if runs < 2 and not against:
        raise UsageError(f"--runs must be at least 2 to compare runs, not {args.runs!r} "
                         "(or compare one run with a trace: --against REF.trace)")
    check_html(args)

    if args.keep_traces:
        folder = _keep_folder(args.keep_traces, 1 if against else runs, options)
        keep = True
    else:
        folder = Path(tempfile.mkdtemp(prefix="twinrun-check-"))
        keep = False

    results: list[RunResult] = []
    try:
        if options.nproc is not None:
            from ._ranks import check_ranks

            code, rank_failed = check_ranks(args, options, runs, folder, args.timeout, against, keep)
            if keep and not rank_failed:
                progress(args, f"twinrun check: traces kept in {folder}")
            keep = keep or rank_failed
            return code
        if against is not None:
            with open_reference(against) as ref:   # a bad reference: one line, before any run
                steps = ref.steps()
            if options.record.max_steps is None and steps:
                # The live run stops where the reference ends, so it costs no more than it did.
                options = options.replace(max_steps=max(steps) + 1)
            limit = options.record.max_steps
            progress(args, f"twinrun check: running {script.name} against {against}"
                           + (f" (at most {limit} steps)" if limit else ""))
            r = launch(options.replace(output=str(folder / "run-1.trace")))
            results.append(r)
            progress(args, _run_line(1, 1, r))
            failed = _failure(args, r, 1)
            if failed is not None:
                keep = True
                return failed
            pairs = [(against, r.trace_path)]
        else:
            for i in range(1, runs + 1):
                progress(args, f"twinrun check: run {i}/{runs} of {script.name} in a fresh process ...")
                r = launch(options.replace(output=str(folder / f"run-{i}.trace")))
                results.append(r)
                progress(args, _run_line(i, runs, r))
                failed = _failure(args, r, i)
                if failed is not None:
                    keep = True
                    return failed
            pairs = [(results[0].trace_path, r.trace_path) for r in results[1:]]

        comparisons = [diff(a, b) for a, b in pairs]
        identical = all(c.identical for c in comparisons)
        if args.json or args.html is not None:
            # The lead comparison: the first that parts (the page draws its two traces).
            k = next((i for i, c in enumerate(comparisons) if not c.identical), 0)
            doc = comparisons[k].to_dict()
            doc.update(identical=identical, script=str(script), args=redact_argv(options.args), against=against,
                       runs=[_run_info(r) for r in results], traces_kept=str(folder) if keep else None,
                       comparisons=[{**c.to_dict(), "a": str(a), "b": str(b)} for (a, b), c in zip(pairs, comparisons)])
            # Written here, inside the try: the finally below deletes the temporary traces the page reads.
            write_page(args, "check", doc, a=str(pairs[k][0]), b=str(pairs[k][1]))
        if args.json:
            emit_json(doc)
        else:
            out = console()
            for (a, b), c in zip(pairs, comparisons):
                if len(comparisons) > 1:
                    out.print(f"[bold]{Path(str(a)).name} vs {Path(str(b)).name}[/bold]")
                render_comparison(c, out)
            if keep:
                progress(args, f"twinrun check: traces kept in {folder}")
        return EXIT_OK if identical else EXIT_DIFFERENT
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _keep_folder(text: str, runs: int, options: RunOptions) -> Path:
    """The --keep-traces folder, made if need be, after checking that no run-N.trace in it is a user's
    file or the --against reference (one line, exit 2, before any run)."""
    from .._artifacts import Kind, check_target

    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--keep-traces {text!r} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--keep-traces {text!r}: cannot make that folder ({e.strerror}); give a folder you "
                         "can write in") from None
    protected = [("the --against reference", options.record.against), ("the script", options.script)]
    for i in range(1, runs + 1):
        check_target(folder / f"run-{i}.trace", Kind.TRACE, protected=protected, option="--keep-traces")
    return folder


def _run_info(r: RunResult) -> dict[str, Any]:
    return {"returncode": r.exit_code, "trace": r.trace_path, "status": r.status, "seconds": round(r.seconds, 3)}


def _run_line(i: int, n: int, r: RunResult) -> str:
    return f"twinrun check: run {i}/{n} finished: {r.status} in {r.seconds:.1f} s"


def _failure(args: argparse.Namespace, r: RunResult, i: int) -> int | None:
    """Exit code when run ``i`` did not produce a comparable trace, after telling the user why."""
    if r.stepless:
        # Two runs without a step cannot be compared: twinrun cannot tell, and says so.
        why = r.no_step_reason()
        if args.json:
            emit_json({"identical": None, "no_step": True, "failed_run": i, "reason": why, "runs": [_run_info(r)]})
        print(f"twinrun check: run {i} of the script: {why}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if r.exit_code in (EXIT_OK, EXIT_DIFFERENT) and r.status in ("complete", "stopped", "diverged"):
        return None
    if r.exit_code == EXIT_BAD_INPUT:
        # The child's own one-line message (bad options, unreadable reference).
        line = shown(r.stderr.strip().splitlines()[-1], 1000) if r.stderr.strip() else "bad input"
        print(line.replace("twinrun run:", "twinrun check:", 1), file=sys.stderr)
        return EXIT_BAD_INPUT
    # the script's own traceback, with anything that would act on the terminal escaped
    sys.stderr.write(shown_lines(r.stderr, max_lines=200, limit=2000) + "\n")
    why = "timed out" if r.status == "timeout" else f"failed (exit code {r.exit_code})"
    if args.json:
        emit_json({"identical": None, "script_failed": True, "failed_run": i, "runs": [_run_info(r)],
                   "stderr_tail": r.stderr[-4000:]})
    print(f"twinrun check: run {i} of the script {why}; its trace is kept at {r.trace_path}", file=sys.stderr)
    if args.html is not None:
        # Said even with --quiet: the file asked for does not appear.
        print(f"twinrun check: no report written to {args.html}: no two runs to compare", file=sys.stderr)
    return EXIT_SCRIPT_FAILED
