"""How commands that run a user's script take it: ``twinrun CMD [options] SCRIPT [options] -- [script args]``.

twinrun's options may stand before or after SCRIPT; everything after the first ``--`` goes to the
script untouched. An option twinrun does not know, before ``--``, is an error that says where it
belongs, so that ``twinrun check train.py --max-steps 5`` never hands ``--max-steps`` to the script
and a script's own option is never silently dropped. (argparse alone cannot mix options after a
positional with a free tail on Python 3.11, hence the split at ``--``.)
"""

from __future__ import annotations

import argparse

__all__ = ["add_script_argument", "whole_number"]


def add_script_argument(parser: argparse.ArgumentParser, help: str = "the Python script to run") -> None:
    """Add SCRIPT and collect the script's own arguments (after ``--``) into ``args.script_args``."""
    parser.add_argument("script", metavar="SCRIPT", help=help)
    parser.set_defaults(script_args=[])
    parser.epilog = ((parser.epilog + "\n") if parser.epilog else "") + \
        f"Arguments for the script go after --: {parser.prog} [options] SCRIPT -- [script args]"
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = list(args or [])
        tail: list[str] = []
        if "--" in args:
            cut = args.index("--")
            args, tail = args[:cut], args[cut + 1:]
        ns, extras = original(args, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}; arguments for the script go after --, "
                         f"as in: {parser.prog} [options] SCRIPT -- {' '.join(extras)}")
        ns.script_args = tail
        return ns, []

    parser.parse_known_args = parse_known_args


def whole_number(minimum: int):
    """An argparse ``type`` for whole numbers >= ``minimum`` (argparse names the option in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, not {text!r}")
        return value

    return parse
