"""``twinrun env check --lock FILE`` and ``twinrun env freeze [-o FILE]``: one environment on every machine.

``cli/env.py`` calls :func:`register_env_subcommands` with its ``env`` sub-parsers. Exit codes of
``check``: 0 the environment matches the lock, 1 drift, 2 a lock that cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import EXIT_DIFFERENT, EXIT_OK, UsageError
from ._output import console, emit_json, progress

__all__ = ["register_env_subcommands"]


def register_env_subcommands(envsub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``check`` and ``freeze`` to ``twinrun env``'s sub-parsers."""
    c = envsub.add_parser("check", parents=[common],
                          help="compare the installed packages with a lock (exit 1 on drift)",
                          description="Compare the installed distributions with a lock (uv.lock, pylock.toml, or a "
                                      "requirements.txt of == pins) and rank the drift by what it can do to the "
                                      "numbers. Exit 0: matches; 1: drift; 2: the lock cannot be read.")
    c.add_argument("--lock", metavar="FILE",
                   help="the lock; default: uv.lock, pylock.toml or requirements*.txt in this folder or its parents")
    c.set_defaults(func=_check)
    f = envsub.add_parser("freeze", parents=[common], help="write exact pins of the numerics-relevant packages",
                          description="Write name==version pins of the installed numerics-relevant distributions "
                                      "(frameworks, BLAS, CUDA libraries), with the index of a +cpu/+cuXXX build.")
    f.add_argument("-o", "--output", dest="freeze_output", metavar="FILE",
                   help="write the pins to FILE (default: print them)")
    f.add_argument("--all", dest="freeze_all", action="store_true",
                   help="pin every installed distribution, not only the numerics-relevant ones")
    f.set_defaults(func=_freeze)


def _check(args: argparse.Namespace) -> int:
    from .. import lock

    path = args.lock
    if path is None:
        found = lock.find_lock(Path.cwd())
        if found is None:
            raise UsageError("no lock given and none found here or in the parent folders (uv.lock, pylock.toml, "
                             "requirements*.txt); give one with --lock FILE or write one with: "
                             "twinrun env freeze -o FILE")
        path = found[0]
        progress(args, f"twinrun env check: using {path}")
    result = lock.check(path)
    if args.json:
        emit_json(result)
    else:
        _show(result)
    return EXIT_DIFFERENT if result.drifted else EXIT_OK


def _show(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = console()
    drift = result.drift
    if not drift:
        lead = "[green]matches the lock[/green]"
    elif result.numerics:
        lead = f"[red bold]{len(drift)} package(s) drift, and that can change numbers[/red bold]"
    else:
        lead = f"[yellow]{len(drift)} package(s) drift, none known to change numbers[/yellow]"
    c.print(f"{escape(result.lock)} ({result.format}, {result.checked} packages, sha256 {result.sha256[:12]}): {lead}")
    if result.differences:
        t = Table()
        for col in ("impact", "package", "lock", "installed", "status", "why"):
            t.add_column(col, overflow="fold")
        style = {"numerics": "red", "possible": "yellow", "none": "dim"}
        for d in result.differences:
            st = d.status.value if d.is_drift else f"[dim]{d.status.value}[/dim]"
            t.add_row(f"[{style[d.rank]}]{d.impact.value}[/]", escape(d.name), escape(d.locked or "-"),
                      escape(d.installed or "-"), st, escape(d.why))
        c.print(t)
    for note in result.notes:
        c.print(f"[dim]note: {escape(note)}[/dim]")


def _freeze(args: argparse.Namespace) -> int:
    from .. import lock

    text = lock.freeze(args.freeze_output, everything=args.freeze_all)
    if args.json:
        pins = [line.split("==", 1) for line in text.splitlines() if line and not line.startswith("#")]
        emit_json({"output": args.freeze_output, "everything": args.freeze_all,
                   "packages": [{"name": n, "version": v, "impact": lock.impact(n).value} for n, v in pins],
                   "text": text})
    elif args.freeze_output:
        progress(args, f"twinrun env freeze: wrote {args.freeze_output}")
    else:
        print(text, end="")
    return EXIT_OK
