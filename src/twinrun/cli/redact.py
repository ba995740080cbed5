"""``twinrun redact FILE [-o OUT]``: a copy of a trace, results file or fingerprint safe to attach to a public issue."""

from __future__ import annotations

import argparse
from typing import Any

from ._output import emit_json, progress

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("redact", parents=[common], help="a copy of a trace, results file or fingerprint safe to share",
                       description="Write a copy of FILE (a trace, a sweep results file or an environment "
                                   "fingerprint) fit to attach to a public issue: secrets, the host name, user "
                                   "names, the working folder and the script's folder replaced, the kept values "
                                   "of input events (samples of your data) dropped; digests, statistics, versions "
                                   "and settings kept, so twinrun diff reads the copy as it read the original. "
                                   "See docs/security.md.")
    p.add_argument("file", metavar="FILE", help="a file written by twinrun run, twinrun sweep or twinrun env -o")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="where to write the copy (default: FILE's name with .shared before its suffix)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._display import shown
    from ..sharing import share_copy

    copy = share_copy(args.file, args.output)
    if args.json:
        emit_json(copy)
    else:
        dropped = f"; {copy.dropped_values} input value(s) dropped" if copy.dropped_values else ""
        progress(args, f"twinrun redact: wrote {shown(copy.output)} (a copy of the {copy.kind} {shown(copy.source)} "
                       f"with secrets, host, user names and folders replaced{dropped}); look it over before you "
                       "post it")
    return 0
