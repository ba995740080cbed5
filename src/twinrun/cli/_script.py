"""Argument types shared by the commands (the SCRIPT rule itself lives with ``RunOptions``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..options import add_script_argument

__all__ = ["add_script_argument", "whole_number"]


def whole_number(minimum: int) -> Callable[[str], int]:
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
