"""``twinrun doctor``: name the cause of a divergence by experiment; test portability."""

from __future__ import annotations

import argparse
from typing import Any

from ..options import add_nproc_argument, positive_int
from ._output import console, emit_json, progress
from ._script import add_script_argument, whole_number
from .report import add_html_argument, check_html, write_page

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:

    p = sub.add_parser("doctor", parents=[common], help="find why a script does not repeat, by experiment",
                       description="Run SCRIPT twice as you would; when the runs part, change one thing at a "
                                   "time (seeds, data randomness, hash seed, kernels, threads) until they do not, "
                                   "and print the fix. When they repeat, test another thread count and lower CPU "
                                   "instruction sets. Exit 0 reproducible, 1 not, 2 bad input, 3 the script failed.")
    p.add_argument("--max-steps", metavar="N", type=whole_number(1), default=20,
                   help="steps per run (default 20)")
    p.add_argument("--against", metavar="OTHER.trace", default=None,
                   help="a trace made on another machine: compare with it and try to reproduce it here")
    p.add_argument("--no-portability", action="store_true",
                   help="when the runs repeat, skip the thread-count and CPU-ISA reruns")
    p.add_argument("--parallel", metavar="N", type=whole_number(1), default=None,
                   help="runs at a time (default 2 where there are 2 cores or more)")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                   help="kill a run that takes longer than this (exit 3)")
    p.add_argument("--keep-traces", metavar="DIR", default=None, help="keep every run's trace in DIR")
    add_nproc_argument(p)
    add_html_argument(p)
    add_script_argument(p, help="the Python training script")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import diagnose

    check_html(args)
    d = diagnose(args.script, args.script_args, max_steps=args.max_steps, against=args.against,
                 portability=not args.no_portability, parallel=args.parallel, timeout=args.timeout,
                 keep=args.keep_traces, progress=lambda m: progress(args, m),
                 nproc=positive_int("nproc", args.nproc))
    write_page(args, "doctor", d.to_dict())
    if args.json:
        emit_json(d)
    else:
        render(d)
    return d.exit_code


def render(d: Any) -> None:
    """The terminal view: the verdict and the fix first, then the evidence."""
    from rich.markup import escape as markup_escape
    from rich.table import Table

    from .._display import shown

    def escape(text: Any, limit: int = 2000) -> str:
        # layer names, call sites and environment values come from a trace or a script
        return markup_escape(shown(text, limit))

    out = console()
    colour = "green" if d.verdict == "reproducible" else "red"
    cause = d.cause + (f" ({d.detail})" if d.detail else "")
    out.print(f"[bold {colour}]{d.verdict.upper()}[/] — cause: [bold]{escape(cause)}[/]"
              + ("" if d.verdict == "reproducible" or d.confirmed else " (not confirmed by an intervention)"))
    out.print(f"[bold]Fix:[/] {escape(d.fix)}")
    out.print(escape(d.summary))
    t = Table(title="evidence", title_justify="left")
    for col in ("experiment", "what changed", "runs", "identical", "first divergence"):
        t.add_column(col)
    for e in d.evidence:
        fd = e.first_divergence
        where = "—" if not fd else f"step {fd.step} {fd.phase} {fd.name}"
        if e.rank is not None:
            where = f"rank {e.rank}: " + (where if fd else (e.note or ""))
        ident = "—" if e.identical is None else ("yes" if e.identical else "no")
        t.add_row(escape(e.name, 200), escape(e.changed), str(e.runs), ident, escape(where, 300))
    out.print(t)
    if d.portability:
        isa = d.portability.get("cpu-isa")
        if isa and isa.get("note"):
            out.print(f"[yellow]CPU ISA:[/] {escape(isa['note'])}")
    if d.environment:
        top = d.environment[:5]
        out.print("environment differences (most likely first): " + escape(
            "; ".join(f"{shown(x['key'], 80)}: {shown(x['a'], 80)} vs {shown(x['b'], 80)} ({x.get('rank') or '?'})"
                      for x in top), 4000))
    if d.nproc:
        out.print(f"[dim]each run: {d.nproc} ranks through torch.distributed, compared rank k against rank k[/]")
    out.print(f"[dim]{d.reruns} runs, {d.seconds:.1f} s, {d.max_steps} steps each[/]")
