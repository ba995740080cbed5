"""The ``twinrun`` command line.

Each command lives in its own module under ``twinrun.cli`` and exposes ``register(sub, common)``,
which adds its sub-parser(s) with ``set_defaults(func=handler)``; a handler takes the parsed
arguments and returns the exit code. Command modules import frameworks only inside handlers.

Exit codes (DESIGN.md): 0 reproducible / success, 1 divergence or significant difference,
2 bad usage or input, 3 the user's script failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .._errors import EXIT_BAD_INPUT, TwinrunError

__all__ = ["build_parser", "main"]

# Command modules in the order their commands appear in --help.
_MODULES = [
    "twinrun.cli.demo",
    "twinrun.cli.run",
    "twinrun.cli.diff",
    "twinrun.cli.replicas",
    "twinrun.cli.show",
    "twinrun.cli.doctor",
    "twinrun.cli.probe",
    "twinrun.cli.env",
    "twinrun.cli.sweep",
    "twinrun.cli.report",
    "twinrun.cli.redact",
]



# The longest error line printed (a message quoting a 5,000-character name is cut, and says so).
_LINE = 900


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (exit 2) instead of a usage dump."""

    def error(self, message: str):
        from .._display import shown
        from ..redact import redact_text

        sys.stderr.write(f"{self.prog}: error: {shown(redact_text(message), _LINE)} (see {self.prog} --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser = _Parser(
        prog="twinrun",
        description="Make neural-network runs repeat exactly; when they don't, say where they first part and why.",
    )
    parser.add_argument("--version", action="version", version=f"twinrun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .._display import shown
    from ..redact import redact_text

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except TwinrunError as e:
        # a message may quote a name or value from a file: escaped, capped, one line
        print(f"twinrun {args.command}: error: {shown(redact_text(str(e)), _LINE)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"twinrun {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in twinrun: one line unless asked for the traceback
        if os.environ.get("TWINRUN_DEBUG"):
            raise
        print(f"twinrun {args.command}: internal error: {type(e).__name__}: {shown(redact_text(str(e)), _LINE)} "
              "(rerun with TWINRUN_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_BAD_INPUT
