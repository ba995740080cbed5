"""Shared output helpers: one JSON document for --json, rich text otherwise, progress on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._format import dumps, to_jsonable

__all__ = ["console", "emit_json", "progress", "to_jsonable"]


def emit_json(obj: Any) -> None:
    """The command's one JSON document on stdout."""
    sys.stdout.write(dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def progress(args: argparse.Namespace, message: str) -> None:
    """One progress line on stderr unless --quiet."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)
