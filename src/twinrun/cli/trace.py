"""``twinrun run`` (record a script's trace) and ``twinrun check`` (does it repeat? where does it part?)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ._output import console, emit_json, progress, to_jsonable
from ._script import add_script_argument, whole_number
from .._errors import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED

__all__ = ["register"]



def _recording_options(p) -> None:
    g = p.add_argument_group("recording")
    g.add_argument("--capture", metavar="PHASES", default=None,
                   help="comma list of phases to record: init,input,forward,loss,grad,param,metric,custom "
                        "(default: all)")
    g.add_argument("--every", metavar="N", default="1", help="record every Nth step (default 1)")
    g.add_argument("--max-steps", metavar="N", default=None,
                   help="end the script cleanly after N optimizer steps")
    g.add_argument("--seed", metavar="S", default=None, type=whole_number(0),
                   help="call twinrun.seed_everything(S) before the script")
    g.add_argument("--deterministic", action="store_true",
                   help="call twinrun.deterministic() before the script")
    g.add_argument("--threads", metavar="N", default=None,
                   help="call twinrun.deterministic(threads=N) before the script")
    g.add_argument("--against", metavar="REF.trace", default=None,
                   help="compare with this trace while running; stop at the first divergence")
    g.add_argument("--keep-going", action="store_true",
                   help="with --against: do not stop at the first divergence")
    g.add_argument("--intervene", metavar="NAMES", default=None,
                   help="apply these twinrun.interventions (comma list) before the script")


def register(sub, common) -> None:

    p = sub.add_parser("run", parents=[common], help="run a script unchanged and record its trace",
                       description="Run SCRIPT as 'python SCRIPT ARGS' would, recording every training "
                                   "step (PyTorch: zero code changes) to a trace file.")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="trace file to write (default twinrun-<timestamp>.trace)")
    _recording_options(p)
    add_script_argument(p)
    p.set_defaults(func=cmd_run)

    c = sub.add_parser("check", parents=[common], help="run a script in fresh processes: does it repeat?",
                       description="Run SCRIPT in fresh processes (as you would) and compare their traces; "
                                   "name the first step, phase and layer where they part.")
    c.add_argument("--runs", metavar="N", default="2", help="how many runs to compare (default 2)")
    c.add_argument("--keep-traces", metavar="DIR", default=None, help="keep the traces in DIR")
    c.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                   help="kill a run that takes longer than this")
    _recording_options(c)
    add_script_argument(c)
    c.set_defaults(func=cmd_check)


# --- run -----------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from ..runner import run_script

    script_args = args.script_args
    saved = None
    if args.json:
        # stdout carries only the JSON document: the script's prints go to stderr.
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        outcome = run_script(
            args.script, script_args, trace_path=args.output, capture=args.capture, every=args.every,
            max_steps=args.max_steps, seed=args.seed, deterministic=args.deterministic,
            threads=args.threads, against=args.against, keep_going=args.keep_going,
            interventions=args.intervene or ())
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    if args.json:
        emit_json(outcome.to_dict())
    else:
        how = {"complete": "complete", "stopped": f"stopped after {args.max_steps} steps",
               "diverged": "stopped at the first divergence from the reference",
               "failed": "failed"}.get(outcome.status, outcome.status)
        progress(args, f"twinrun run: trace {outcome.trace_path} ({outcome.steps} steps, {how}, "
                       f"{outcome.seconds:.1f} s)")
    return outcome.exit_code


# --- check ---------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from .._errors import UsageError
    from ..runner import open_reference, _positive, check_script, launch, parse_capture

    script = check_script(args.script)
    script_args = args.script_args
    runs = _positive("--runs", args.runs, allow_none=False)
    if runs < 2 and not args.against:
        raise UsageError(f"--runs must be at least 2 to compare runs, not {args.runs!r} "
                         "(or compare one run with a trace: --against REF.trace)")
    every = _positive("--every", args.every, allow_none=False)
    max_steps = _positive("--max-steps", args.max_steps)
    _positive("--threads", args.threads)
    parse_capture(args.capture)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout!r}")
    ref = open_reference(args.against)

    if args.keep_traces:
        folder = Path(args.keep_traces)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--keep-traces {args.keep_traces!r} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        keep = True
    else:
        folder = Path(tempfile.mkdtemp(prefix="twinrun-check-"))
        keep = False

    common = dict(capture=args.capture, every=every, seed=args.seed, deterministic=args.deterministic,
                  threads=args.threads, timeout=args.timeout, interventions=args.intervene or ())
    results = []
    try:
        if ref is not None:
            if max_steps is None:
                # The live run stops where the reference ends, so it costs no more than it did.
                steps = ref.steps()
                max_steps = (max(steps) + 1) if steps else None
            progress(args, f"twinrun check: running {script.name} against {args.against}"
                           + (f" (at most {max_steps} steps)" if max_steps else ""))
            r = launch(script, script_args, trace_path=folder / "run-1.trace", max_steps=max_steps,
                       against=args.against, keep_going=args.keep_going, **common)
            results.append(r)
            progress(args, _run_line(1, 1, r))
            failed = _failure(args, r, 1)
            if failed is not None:
                keep = True
                return failed
            pairs = [(args.against, r.trace_path)]
        else:
            for i in range(1, runs + 1):
                progress(args, f"twinrun check: run {i}/{runs} of {script.name} in a fresh process ...")
                r = launch(script, script_args, trace_path=folder / f"run-{i}.trace", max_steps=max_steps,
                           **common)
                results.append(r)
                progress(args, _run_line(i, runs, r))
                failed = _failure(args, r, i)
                if failed is not None:
                    keep = True
                    return failed
            pairs = [(results[0].trace_path, r.trace_path) for r in results[1:]]

        from ..compare import compare

        comparisons = [compare(a, b) for a, b in pairs]
        identical = all(c.identical for c in comparisons)
        if args.json:
            lead = next((c for c in comparisons if not c.identical), comparisons[0])
            doc = dict(to_jsonable(lead.to_dict()))
            doc.update(identical=identical, script=str(script), args=script_args,
                       against=args.against,
                       runs=[_run_info(r) for r in results],
                       traces_kept=str(folder) if keep else None,
                       comparisons=[{"a": str(a), "b": str(b), **to_jsonable(c.to_dict())}
                                    for (a, b), c in zip(pairs, comparisons)])
            emit_json(doc)
        else:
            _render(args, pairs, comparisons, results, folder if keep else None)
        return EXIT_OK if identical else EXIT_DIFFERENT
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _run_info(r) -> dict:
    return {"returncode": r.returncode, "trace": r.trace_path, "status": r.status,
            "seconds": round(r.seconds, 3)}


def _run_line(i: int, n: int, r) -> str:
    return f"twinrun check: run {i}/{n} finished: {r.status} in {r.seconds:.1f} s"


def _failure(args, r, i: int) -> int | None:
    """Exit code when run ``i`` did not produce a comparable trace, after telling the user why."""
    if r.returncode in (EXIT_OK, EXIT_DIFFERENT) and r.status in ("complete", "stopped", "diverged"):
        return None
    if r.returncode == EXIT_BAD_INPUT:
        # The child's own one-line message (bad options, unreadable reference).
        line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "bad input"
        print(line.replace("twinrun run:", "twinrun check:", 1), file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stderr.write(r.stderr)  # the script's own traceback
    why = ("timed out" if r.status == "timeout" else
           f"failed (exit code {r.returncode})")
    if args.json:
        emit_json({"identical": None, "script_failed": True, "failed_run": i, "runs": [_run_info(r)],
                   "stderr_tail": r.stderr[-4000:]})
    print(f"twinrun check: run {i} of the script {why}; its trace is kept at {r.trace_path}",
          file=sys.stderr)
    return EXIT_SCRIPT_FAILED


def _render(args, pairs, comparisons, results, kept) -> None:
    from rich.table import Table

    out = console()
    for (a, b), c in zip(pairs, comparisons):
        if len(comparisons) > 1:
            out.print(f"[bold]{Path(str(a)).name} vs {Path(str(b)).name}[/bold]")
        out.print(c.sentence(), markup=False)
        fd = c.first_divergence
        if fd:
            t = Table(show_header=True, header_style="bold")
            t.add_column("first divergence")
            t.add_column("")
            for key, value in fd.items():
                if isinstance(value, (dict, list)):
                    continue
                t.add_row(str(key).replace("_", " "), _fmt(value))
            out.print(t)
        growth = getattr(c, "growth", None) or []
        if growth:
            rows = growth if isinstance(growth, list) else list(growth)
            keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))] if isinstance(rows[0], dict) else []
            if keys:
                t = Table(show_header=True, header_style="bold", title="how it grows")
                for k in keys:
                    t.add_column(str(k).replace("_", " "))
                for row in rows[:12]:
                    t.add_row(*(_fmt(row.get(k)) for k in keys))
                out.print(t)
        for s in (getattr(c, "structural", None) or [])[:10]:
            out.print(f"  structural: {s if isinstance(s, str) else to_jsonable(s)}", markup=False)
    if kept:
        progress(args, f"twinrun check: traces kept in {kept}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)
