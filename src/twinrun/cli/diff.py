"""``twinrun diff A.trace B.trace``: where two recorded runs first part, and how the difference grows."""

from __future__ import annotations

import argparse
from typing import Any

from ._output import emit_json
from .report import add_html_argument, check_html, write_page
from .views import render_comparison

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diff", parents=[common], help="compare two traces: identical, or where they first part",
                       description="Compare two traces event by event. Exit 0 identical, 1 they part, "
                                   "2 bad input (not a trace, or traces of different models).")
    p.add_argument("a", metavar="A.trace", help="first trace (e.g. from `twinrun run -o A.trace`)")
    p.add_argument("b", metavar="B.trace", help="second trace")
    add_html_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..comparison import diff

    check_html(args)
    c = diff(args.a, args.b)
    c.check_same_model()  # different models: one line, exit 2
    write_page(args, "diff", c.to_dict(), a=args.a, b=args.b)
    if args.json:
        emit_json(c)
    else:
        render_comparison(c)
    return 0 if c.identical else 1
