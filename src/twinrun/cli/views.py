"""The one terminal view of a ``Comparison`` (``twinrun diff`` and ``twinrun check`` show it the same way)."""

from __future__ import annotations

from typing import Any

from .._display import shown
from .._format import fmt_count, fmt_float
from ..comparison import Comparison
from ._output import console

__all__ = ["render_comparison"]

_GROWTH_ROWS = 8


def render_comparison(c: Comparison, out: Any = None) -> None:
    """The lead sentence, then short tables: the first divergence, how it grows, the environment."""
    from rich.table import Table
    from rich.text import Text

    out = out or console()
    out.print(Text(shown(c.sentence(), 2000), style="bold"))
    for note in c.notes:
        out.print(Text(f"note: {shown(note)}", style="dim"))
    d = c.first_divergence
    if d is not None:
        t = Table(title="first divergence", show_header=False, title_justify="left")
        t.add_column(style="dim")
        t.add_column()
        rows = [
            ("step", str(d.step)), ("phase", str(d.phase)), ("name", shown(d.name)),
            ("tensor", f"{shown(d.dtype, 40)}{d.shape}"),
            ("differing values", "?" if d.differing is None else f"{fmt_count(d.differing)} of {fmt_count(d.size)}"),
            ("max abs difference", fmt_float(d.max_abs)), ("max rel difference", fmt_float(d.max_rel)),
            ("max ULP distance", "?" if d.max_ulp is None else fmt_count(d.max_ulp)),
            ("l2 norm A / B", f"{fmt_float(d.stats_a.l2, 9)} / {fmt_float(d.stats_b.l2, 9)}"),
        ]
        if d.input_order_only is not None:
            rows.append(("same samples, other order", "yes" if d.input_order_only else "no"))
        for k, v in rows:
            t.add_row(k, Text(str(v)))
        out.print(t)
    if c.growth:
        t = Table(title="growth", title_justify="left")
        for col in ("step", "differing events", "param rel diff"):
            t.add_column(col, justify="right")
        g = c.growth
        rows_shown = g if len(g) <= _GROWTH_ROWS else [*g[:_GROWTH_ROWS // 2], None, *g[-(_GROWTH_ROWS // 2):]]
        for row in rows_shown:
            if row is None:
                t.add_row("...", "", "")
                continue
            rel = fmt_float(row.param_rel_diff) + ("" if row.param_basis in (None, "values") else " (>=)")
            t.add_row(str(row.step), f"{row.differing} of {row.events}", rel)
        out.print(t)
    for s in c.structural[:1]:
        if c.first_divergence is not None:   # after a divergence; before one, the sentence says it all
            out.print(Text(f"structural: {shown(s.text(), 2000)}", style="dim"))
    env = c.env_diff
    # differences ranked "none" (timestamps, hostnames) stay in --json only
    diffs = [x for x in (env.differences if env else []) if x.rank != "none"]
    if diffs:
        t = Table(title="environment differences", title_justify="left")
        t.add_column("key", overflow="fold")
        for col in ("A", "B", "rank"):
            t.add_column(col)
        for item in diffs[:8]:
            t.add_row(Text(shown(item.key, 80)), Text(_short(item.a)), Text(_short(item.b)), Text(item.rank))
        if len(diffs) > 8:
            t.add_row(f"... {len(diffs) - 8} more (--json for all)", "", "", "")
        out.print(t)


def _short(v: Any, width: int = 40) -> str:
    """A value from a trace's environment, escaped (it came from a file) and cut to ``width``."""
    s = shown(v, 10 * width)
    return s if len(s) <= width else s[: width - 3] + "..."
