"""``twinrun probe SCRIPT``: does an inference script's model give each row the same bits on a second
call, inside batches of other sizes, with another thread count, on a lower CPU instruction set?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED
from .._format import fmt_count
from ..options import RunOptions, add_script_argument, positive_int, timeout_seconds
from ._output import console, emit_json, progress
from .report import add_html_argument, check_html, write_page

__all__ = ["register"]

_CHECKS = ("repeat", "batch_invariance", "threads", "isa")   # probes.checks.CHECKS, without importing it here


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "probe", parents=[common], help="run an inference script: same bits per row on repeat, batch, threads, CPU?",
        description="Run SCRIPT unchanged (PyTorch) and, for each forward call of its model made without "
                    "gradients: call it again (repeat), row by row and in sub-batches (batch_invariance), "
                    "and rerun the script with 1 thread (threads) and at each lower CPU instruction set "
                    "(isa) in fresh processes. Names the first layer where rows part and the largest ULP "
                    "distance at the output. Exit 0 when every check gives the same bits, 1 otherwise. "
                    "Keras models and JAX functions: twinrun.probe(fn, batch) in Python.")
    p.add_argument("--checks", metavar="CHECKS", default=",".join(_CHECKS),
                   help=f"comma list of checks to run (default: all of {','.join(_CHECKS)})")
    p.add_argument("--max-calls", metavar="N", default="8",
                   help="probe at most the first N model calls (default 8)")
    p.add_argument("--seed", metavar="S", default=None,
                   help="call twinrun.seed_everything(S) before the script (every process), so that random "
                        "inputs and weights repeat across the fresh processes")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                   help="kill a run of the script that takes longer than this")
    add_html_argument(p)
    add_script_argument(p, help="the Python inference script to run")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from ..probes.checks import check_names
    from ..probes.session import ProbeScriptFailed, probe_script

    checks = check_names(args.checks)
    max_calls = positive_int("max_calls", args.max_calls, allow_none=False)
    assert max_calls is not None
    timeout = timeout_seconds(args.timeout)   # finite and > 0: nan and inf are one line too
    options = RunOptions.create(args.script, args.script_args, seed=args.seed)
    check_html(args)   # a bad --html path: one line before any run
    try:
        result = probe_script(options, checks, max_calls=max_calls, timeout=timeout,
                              progress=lambda m: progress(args, m))
    except ProbeScriptFailed as exc:
        from .._display import shown_lines

        sys.stderr.write(shown_lines(exc.stderr, max_lines=200, limit=2000) + "\n")   # the script's own, escaped
        if args.json:
            emit_json({"stable": None, "script_failed": True, "error": str(exc), "stderr_tail": exc.stderr[-4000:]})
        print(f"twinrun probe: {exc}" + ("; no page written" if args.html else ""), file=sys.stderr)
        return EXIT_SCRIPT_FAILED
    doc = result.to_dict()
    write_page(args, "probe", doc)
    if args.json:
        emit_json(doc)
    else:
        _render(doc)
    return EXIT_OK if result.stable else EXIT_DIFFERENT


def _render(doc: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from .._display import shown

    out = console()
    verdict = "SAME BITS" if doc["stable"] else "OTHER BITS"
    # layer names and notes come from the script: escaped, capped, never read as markup
    out.print(Text.assemble((verdict, "bold"), "  ", shown(doc["sentence"], 2000)))
    table = Table(show_edge=False, pad_edge=False)
    for col in ("check", "same bits", "max ULP", "rows differ", "first layer"):
        table.add_column(col, no_wrap=True)
    notes = []
    for name, c in doc["checks"].items():
        same = {True: "yes", False: "NO", None: "-"}[c["stable"]]
        ulp = "-" if c["stable"] is None else ("NaN" if c["max_ulp"] is None else fmt_count(c["max_ulp"]))
        rows = "-" if c.get("rows_differing") is None else fmt_count(c["rows_differing"])
        table.add_row(name, same, ulp, rows, Text(shown(c.get("first_layer") or "-", 120)))
        said = "; ".join(x for x in (c.get("setting"), c.get("note")) if x)
        if said:
            notes.append(f"  {name}: {said}")
    out.print(table)
    for line in notes:
        out.print(shown(line, 2000), markup=False)
    isa = doc["checks"]["isa"].get("details", {}).get("variants")
    if isa:
        out.print("instruction sets: " + ", ".join(
            f"{name} {'same' if v['stable'] else 'other bits' if v['stable'] is False else 'cannot tell'}"
            for name, v in isa.items()))
    if doc.get("skipped"):
        out.print(f"not probed: {len(doc['skipped'])} call(s), e.g. {shown(doc['skipped'][0])}", markup=False)
