"""A small HTML builder that escapes by construction, and the page's JSON islands.

Every string is escaped unless it is ``Safe``, and only this module's builders make ``Safe``
values: a name from a trace, a script or an environment can never become markup, whatever it
holds (``<script>``, quotes, ``</script>``, control characters, lone surrogates).

>>> str(el("td", {"title": 'a "b"'}, "<script>"))
'<td title="a &quot;b&quot;">&lt;script&gt;</td>'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from .._format import to_jsonable

__all__ = ["Child", "Safe", "code_text", "el", "esc", "frag", "island", "num"]


class Safe(str):
    """Markup made by this module: inserted as it is."""

    __slots__ = ()


Child: TypeAlias = "str | int | float | Iterable[Child] | None"   # Safe is a str

# Control characters, DEL, C1 controls, lone surrogates, zero-width and bidirectional-override
# characters and line separators: shown as visible escapes (`\x1b`, `\u202e`), never passed to the
# page (controls are parse errors in HTML, a lone surrogate cannot be encoded, and bidi overrides
# would make a name read other than it is).
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\x7f-\x9f\ud800-\udfff"
                        "\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}


def _visible(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def esc(text: Any) -> Safe:
    """``text`` as HTML text or attribute value: markup characters and invisible characters escaped."""
    s = _INVISIBLE.sub(_visible, str(text))
    return Safe(re.sub(r"[&<>\"']", lambda m: _ESCAPES[m.group(0)], s))


def _children(items: Iterable[Child]) -> str:
    out: list[str] = []
    for c in items:
        if c is None or c is False:
            continue
        if isinstance(c, Safe):
            out.append(c)
        elif isinstance(c, str):
            out.append(esc(c))
        elif isinstance(c, bool):
            out.append(esc("yes" if c else "no"))
        elif isinstance(c, (int, float)):
            out.append(esc(num(c)))
        else:
            out.append(_children(c))
    return "".join(out)


_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "col", "wbr"})
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9:-]*$")


def el(tag: str, attrs: Mapping[str, Any] | None = None, *children: Child) -> Safe:
    """``<tag attrs>children</tag>``; attribute values and text are escaped, ``None`` attributes dropped.

    Attributes are written in the order given (callers pass literals), so the bytes are stable.
    """
    if not _NAME.match(tag):
        raise ValueError(f"bad tag name {tag!r}")
    parts = [tag]
    for k, v in (attrs or {}).items():
        if v is None or v is False:
            continue
        if not _NAME.match(k):
            raise ValueError(f"bad attribute name {k!r}")
        if v is True:
            parts.append(k)
        else:
            parts.append(f'{k}="{esc(num(v) if isinstance(v, float) else v)}"')
    head = "<" + " ".join(parts) + ">"
    if tag in _VOID:
        return Safe(head)
    return Safe(f"{head}{_children(children)}</{tag}>")


def frag(*children: Child) -> Safe:
    """Several children as one piece of markup."""
    return Safe(_children(children))


def num(x: float, digits: int = 2) -> str:
    """A coordinate or plain number with at most ``digits`` decimals, no trailing zeros (stable text)."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def code_text(text: str) -> Safe:
    """Prose in which `backticked` spans are code, as twinrun's sentences write them."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: show the text as it is
        return esc(text)
    return frag(*(el("code", None, p) if i % 2 else p for i, p in enumerate(parts)))


def island(element_id: str, data: Any) -> Safe:
    """``<script type="application/json">``: keys sorted, ASCII only, and ``<``, ``>``, ``&`` as
    ``\\u`` escapes so that no string (``</script>``, ``<!--``) can end the element early."""
    text = json.dumps(to_jsonable(data), ensure_ascii=True, sort_keys=True, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Safe(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')
