"""The probe page: per inference check, stable or not, the first layer where rows part, and the
distribution of ULP distances over the rows of the batch.

The probe document (``twinrun probe --json``, issue 14)::

    {"checks": {"repeat": {"stable": bool | null, "max_ulp": int | null, "first_layer": str | null,
                           "ulp_per_row": [int, ...],      # optional: largest ULP distance of each row
                           "setting": str, "note": str},   # optional
                "batch_invariance": {...}, "threads": {...}, "isa": {...}},
     "sentence": str, "script": str}                       # optional

``stable`` null means the check was not run (``note`` says why).
"""

from __future__ import annotations

import math
from typing import Any

from ._html import Child, Safe, code_text, el, frag, num
from ._page import Lead, Section, dl, figure, fmt_int, note, table, unavailable
from ._svg import BAR_FILLS, STYLES, Chart, marker

__all__ = ["build", "sentence"]

_WHAT = {
    "repeat": "the same call again gives the same bits",
    "batch_invariance": "each row computed alone (and in other sub-batches) equals the same row inside the batch",
    "threads": "1 thread gives the same bits as the default thread count (fresh processes)",
    "isa": "each lower CPU instruction set gives the same bits (fresh processes)",
}
_ORDER = ("repeat", "batch_invariance", "threads", "isa")


def _checks(doc: dict) -> list[tuple[str, dict]]:
    checks = doc.get("checks") or {}
    names = [n for n in _ORDER if n in checks] + sorted(n for n in checks if n not in _ORDER)
    return [(n, checks[n] if isinstance(checks[n], dict) else {}) for n in names]


def sentence(doc: dict) -> str:
    """The lead when the document brings none: which checks give other bits, where, by how much."""
    checks = _checks(doc)
    run = [(n, c) for n, c in checks if c.get("stable") is not None]
    bad = [(n, c) for n, c in run if c.get("stable") is False]
    if not run:
        return "No inference check was run."
    if not bad:
        return f"Inference gives the same bits in every check run ({', '.join(n for n, _ in run)})."
    parts = []
    for n, c in bad:
        where = f"first layer `{c['first_layer']}`" if c.get("first_layer") else "first layer unknown"
        ulp = f", up to {c['max_ulp']:,} ULP at the output" if isinstance(c.get("max_ulp"), int) else ""
        parts.append(f"{n} ({where}{ulp})")
    return f"{len(bad)} of {len(run)} checks give other bits: " + "; ".join(parts) + "."


def build(doc: dict) -> tuple[Lead, list[Section], dict, list[str]]:
    checks = _checks(doc)
    if not checks:
        from .._errors import UsageError

        raise UsageError("the probe document has no checks (expected {\"checks\": {\"repeat\": {...}, ...}})")
    bad = any(c.get("stable") is False for _, c in checks)
    text = str(doc.get("sentence") or doc.get("summary") or sentence(doc))
    lead = Lead([text], "OTHER BITS" if bad else "SAME BITS", "bad" if bad else "good")
    rows = []
    for n, c in checks:
        per = c.get("ulp_per_row") if isinstance(c.get("ulp_per_row"), list) else None
        differing = None if per is None else sum(1 for u in per if isinstance(u, (int, float)) and u > 0)
        stable = c.get("stable")
        result = (el("span", {"class": "yes"}, "✓ same bits") if stable else
                  el("span", {"class": "no"}, "✗ other bits") if stable is False else el("span", None, "— not run"))
        order = 0 if stable is True else 1 if stable is False else 2
        rows.append([el("code", None, n), _WHAT.get(n, str(c.get("what") or "")), (result, order),
                     el("code", None, str(c["first_layer"])) if c.get("first_layer") else "—",
                     (fmt_int(c.get("max_ulp")), c.get("max_ulp") if isinstance(c.get("max_ulp"), int) else ""),
                     "—" if per is None else f"{differing:,} of {len(per):,}",
                     str(c.get("setting") or c.get("note") or "")])
    sections = [Section("checks", "Checks", table(
        [("check", "text"), ("what it tests", "text"), ("result", "text"), ("first layer where rows part", "text"),
         ("largest ULP distance at the output", "number"), ("rows that differ", "text"), ("setting / note", "text")],
        rows, sortable=True, caption="inference checks", ident="checks-table"),
        "Each check recomputes the recorded forward calls another way and compares the bits of every output row.")]
    charts: list[Child] = []
    same: list[str] = []
    for i, (n, c) in enumerate(checks):
        per = c.get("ulp_per_row")
        if isinstance(per, list) and per:
            if all(u == 0 for u in per):
                same.append(f"{n}: all {len(per):,} rows identical")
            else:
                charts.append(el("div", None, el("h3", None, el("code", None, n)), _row_chart(i, n, c, per)))
    body: list[Child] = []
    if charts:
        body.append(el("div", {"class": "grid2"}, charts))
    if same:
        body.append(el("p", None, "Not drawn, every row identical: ", "; ".join(same), "."))
    sections.append(Section("rows", "ULP distance per row",
                            frag(body) if body else unavailable("The document holds no per-row distances."),
                            "For each row of the batch, the largest ULP distance between its output in the original "
                            "call and in the check. 0 means the row's bits are identical. Values near zero have tiny "
                            "ULPs, so a small absolute difference there counts many ULP."))
    facts = [(k, doc.get(k)) for k in ("script", "calls", "batch") if doc.get(k) is not None]
    if facts:
        sections.append(Section("inputs", "What was probed", dl([(k, str(v)) for k, v in facts])))
    for n, c in checks:
        if c.get("note") and c.get("stable") is None:
            sections[0].body = frag(sections[0].body, note(f"{n}: ", code_text(str(c["note"]))))
    data = {"sentence": text}
    return lead, sections, data, [str(doc.get("script") or "probe document")]


def _row_chart(i: int, name: str, c: dict, per: list[Any]) -> Safe:
    vals = [int(u) if isinstance(u, (int, float)) and math.isfinite(u) else None for u in per]
    n = len(vals)
    top = max([v for v in vals if v is not None] + [1])
    kmax = max(1, math.ceil(math.log2(top + 1)))
    ch = Chart(f"rows-{i}", f"ULP distance per row, check {name}",
               f"For each of the {n} rows, the largest ULP distance at the output in the {name} check "
               "(0: identical; log scale above 0).", width=520, height=250)
    # log2 axis with 0 on its own baseline: y = log2(u + 1)
    ch.scales(-0.5, n - 0.5, 0, kmax)
    assert ch.x is not None and ch.y is not None
    yt = [(0.0, "0")] + [(math.log2(2 ** k + 1), f"{2 ** k:,}") for k in range(kmax + 1)
                         if (k == 0 or k % max(1, math.ceil(kmax / 6)) == 0) and math.log2(2 ** k + 1) <= kmax]
    step = max(1, 10 ** math.floor(math.log10(max(n, 1))) // (1 if n <= 20 else 2))
    xt = [(float(r), str(r)) for r in range(0, n, max(1, step if n > 20 else 1 if n <= 16 else 2))]
    ch.axes("row of the batch (index)", "largest ULP distance (log scale)", yticks=yt, xticks=xt)
    bw = max(0.8, (ch.x(1) - ch.x(0)) * 0.8) if n > 1 else 12
    colour = STYLES[1][0]
    for r, u in enumerate(vals):
        x = ch.x(r)
        if u is None:
            continue
        if u == 0:
            ch.add(marker("circle", x, ch.y(0) - 3, STYLES[2][0], min(2.5, bw / 2 + 0.5)))
            continue
        y = ch.y(math.log2(u + 1))
        ch.add(el("rect", {"x": num(x - bw / 2), "y": num(y), "width": num(bw), "height": num(ch.y(0) - y),
                           "fill": BAR_FILLS[1], "stroke": colour if bw < 3 else "#333", "stroke-width": 0.4},
                  el("title", None, f"row {r}: {u:,} ULP")))
    same = sum(1 for v in vals if v == 0)
    diff = [v for v in vals if v]
    cap = f"{name}: {len(diff):,} of {n:,} rows differ"
    if diff:
        srt = sorted(diff)
        cap += f" (median {srt[len(srt) // 2]:,} ULP, largest {srt[-1]:,} ULP)"
    cap += f"; {same:,} rows are identical" + (" (green dots on the baseline)." if same else ".")
    if c.get("first_layer"):
        cap += f" The rows first part at layer {c['first_layer']}."
    return figure(ch.render(), cap)
