"""``twinrun replicas out.trace``: do the ranks of one data-parallel run hold the same parameters, step by step?"""

from __future__ import annotations

import argparse
from typing import Any

from ._output import console, emit_json

__all__ = ["register", "render_replicas"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replicas", parents=[common], help="compare the ranks of one multi-process run: do the "
                                                           "replicas agree, and did the ranks get different data?",
                       description="Compare the rank traces of one data-parallel run (twinrun run --nproc N, or "
                                   "under torchrun): the parameters of every rank with rank 0's at initialisation "
                                   "and after every step (digests only), and the ranks' input samples. Exit 0 the "
                                   "replicas agree, 1 they part or every rank trained on the same batches, 2 bad "
                                   "input.")
    p.add_argument("traces", metavar="TRACE", nargs="+",
                   help="the run's -o path (out.trace: finds out.rank0.trace, out.rank1.trace, ...), one rank's "
                        "trace, or every rank trace")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..comparison.replicas import replicas

    r = replicas(args.traces)
    if args.json:
        emit_json(r)
    else:
        render_replicas(r)
    return 0 if r.ok else 1


def render_replicas(r: Any, out: Any = None) -> None:
    """The lead sentence, the first divergence (rank, step, parameter, size), then notes."""
    from rich.table import Table
    from rich.text import Text

    from .._format import fmt_count, fmt_float

    out = out or console()
    out.print(Text(r.sentence(), style="bold" if r.ok else "bold red"))
    d = r.first_divergence
    if d is not None:
        t = Table(title="first replica divergence", show_header=False, title_justify="left")
        t.add_column(style="dim")
        t.add_column()
        rows = [("step", str(d.step)), ("phase", d.phase), ("name", d.name),
                ("rank", ", ".join(map(str, d.ranks)) + " (vs rank 0)"), ("tensor", f"{d.dtype}{d.shape}"),
                ("differing values",
                 "?" if d.differing is None else f"{fmt_count(d.differing)} of {fmt_count(d.size)}"),
                ("max abs difference", fmt_float(d.max_abs)), ("max rel difference", fmt_float(d.max_rel)),
                ("max ULP distance", "?" if d.max_ulp is None else fmt_count(d.max_ulp))]
        for k, v in rows:
            t.add_row(k, Text(v))
        out.print(t)
    for note in r.notes:
        out.print(Text(f"note: {note}", style="dim"))
