"""``twinrun diff A.trace B.trace``: where two recorded runs first part, and how the difference grows."""

from __future__ import annotations

from ._output import console, emit_json

__all__ = ["register"]

_GROWTH_ROWS = 8


def register(sub, common) -> None:
    p = sub.add_parser("diff", parents=[common], help="compare two traces: identical, or where they first part",
                       description="Compare two traces event by event. Exit 0 identical, 1 they part, "
                                   "2 bad input (not a trace, or traces of different models).")
    p.add_argument("a", metavar="A.trace", help="first trace (e.g. from `twinrun run -o A.trace`)")
    p.add_argument("b", metavar="B.trace", help="second trace")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..compare import compare

    c = compare(args.a, args.b)
    c.check_same_model()  # different models: one line, exit 2
    if args.json:
        emit_json(c.to_dict())
    else:
        render(c)
    return 0 if c.identical else 1


def render(c, out=None) -> None:
    """The terminal view: the lead sentence, then short tables."""
    from rich.table import Table
    from rich.text import Text

    out = out or console()
    out.print(Text(c.sentence(), style="bold"))
    for note in c.notes:
        out.print(Text(f"note: {note}", style="dim"))
    d = c.first_divergence
    if d is not None:
        t = Table(title="first divergence", show_header=False, title_justify="left")
        t.add_column(style="dim")
        t.add_column()
        rows = [
            ("step", str(d["step"])), ("phase", d["phase"]), ("name", d["name"]),
            ("tensor", f"{d['dtype']}{d['shape']}"),
            ("differing values", "?" if d["differing"] is None else f"{d['differing']:,} of {d['size']:,}"),
            ("max abs difference", _fmt(d["max_abs"])), ("max rel difference", _fmt(d["max_rel"])),
            ("max ULP distance", "?" if d["max_ulp"] is None else f"{d['max_ulp']:,}"),
            ("l2 norm A / B", f"{_fmt(d['stats_a']['l2'], 9)} / {_fmt(d['stats_b']['l2'], 9)}"),
        ]
        if d.get("input_order_only") is not None:
            rows.append(("same samples, other order", "yes" if d["input_order_only"] else "no"))
        for k, v in rows:
            t.add_row(k, Text(str(v)))
        out.print(t)
    if c.growth:
        t = Table(title="growth", title_justify="left")
        for col in ("step", "differing events", "param rel diff"):
            t.add_column(col, justify="right")
        g = c.growth
        shown = g if len(g) <= _GROWTH_ROWS else g[:_GROWTH_ROWS // 2] + [None] + g[-(_GROWTH_ROWS // 2):]
        for row in shown:
            if row is None:
                t.add_row("...", "", "")
                continue
            rel = _fmt(row["param_rel_diff"]) + ("" if row["param_basis"] in (None, "values") else " (>=)")
            t.add_row(str(row["step"]), f"{row['differing']} of {row['events']}", rel)
        out.print(t)
    env = c.env_diff or {}
    # differences ranked "none" (timestamps, hostnames) stay in --json only
    diffs = [d for d in env.get("differences") or [] if d.get("rank") != "none"]
    if diffs:
        t = Table(title="environment differences", title_justify="left")
        t.add_column("key", overflow="fold")
        for col in ("A", "B", "rank"):
            t.add_column(col)
        for item in diffs[:8]:
            t.add_row(Text(str(item.get("key"))), Text(_short(item.get("a"))), Text(_short(item.get("b"))),
                      Text(str(item.get("rank") or "")))
        if len(diffs) > 8:
            t.add_row(f"... {len(diffs) - 8} more (--json for all)", "", "", "")
        out.print(t)


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return "?"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def _short(v, width: int = 40) -> str:
    s = str(v)
    return s if len(s) <= width else s[: width - 3] + "..."
