"""Showing strings that came from a file or a script on a terminal, safely.

A layer name, a metric name, an error tail or a fingerprint value is chosen by whoever wrote the
script or the file. Printed raw, ``ESC ]52;c;...BEL`` writes the reader's clipboard, ``ESC [2J``
clears the screen, ``\\r`` and backspaces overwrite what was printed, and bidirectional overrides
(U+202E) make text read in another order than it runs. :func:`shown` escapes every such character
visibly and caps the length, so the name is still recognisable and nothing acts on the terminal.

Use it for everything in terminal output (and in one-line error messages) that did not come from
twinrun itself; ``--json`` output is already safe (JSON escapes control characters) and keeps the
full text.

>>> shown("features.0")
'features.0'
>>> shown("evil\\x1b]52;c;aGk=\\x07\\x1b[2J")
'evil\\\\x1b]52;c;aGk=\\\\x07\\\\x1b[2J'
>>> shown("A" * 300, limit=20)
'AAAAAAAAAAAAAAAAA... (300 characters)'
"""

from __future__ import annotations

import unicodedata

__all__ = ["DEFAULT_LIMIT", "shown", "shown_lines"]

DEFAULT_LIMIT = 200

# Characters that act on a terminal or reorder text, besides the C0/C1 controls and DEL:
# bidirectional embeddings, overrides and isolates, and the line and paragraph separators.
_INVISIBLE = {"\u061c", "\u200e", "\u200f", "\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)),
              *map(chr, range(0x2066, 0x206A)), "\ufeff"}


def _escape_char(c: str) -> str:
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def _unsafe(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o < 0xA0 or c in _INVISIBLE or unicodedata.category(c) in ("Cs", "Co", "Cn")


def shown(text: object, limit: int = DEFAULT_LIMIT, *, keep_newlines: bool = False) -> str:
    """``text`` (anything; ``str()`` of it) with control and reordering characters escaped as
    ``\\xNN``/``\\uNNNN``; longer than ``limit`` characters, cut and marked with the full length.
    ``keep_newlines`` keeps ``\\n`` (for multi-line text such as a script's error tail; see
    :func:`shown_lines`)."""
    s = text if isinstance(text, str) else str(text)
    out = []
    for c in s:
        if c == "\n" and keep_newlines:
            out.append(c)
        elif _unsafe(c):
            out.append(_escape_char(c))
        else:
            out.append(c)
    result = "".join(out)
    if len(result) > limit:   # cut, and say how long it was, so a cut name is not taken for the whole
        result = result[:max(limit - 3, 1)] + f"... ({len(s):,} characters)"
    return result


def shown_lines(text: object, *, max_lines: int = 20, limit: int = DEFAULT_LIMIT) -> str:
    """The last ``max_lines`` lines of ``text``, each made safe by :func:`shown` and capped at ``limit``.

    >>> shown_lines("a\\nb\\x1b[2J\\nc", max_lines=2)
    'b\\\\x1b[2J\\nc'
    """
    lines = (text if isinstance(text, str) else str(text)).splitlines()
    return "\n".join(shown(line, limit) for line in lines[-max_lines:])
