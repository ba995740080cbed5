"""The diff and check page: where two runs part, how the difference grows, and the environment diff."""

from __future__ import annotations

import math
from typing import Any

from . import data as D
from ._html import Child, Safe, code_text, el, frag, num
from ._page import Lead, Section, dl, figure, fmt, fmt_int, note, table, unavailable
from ._svg import (
    BAR_FILLS,
    STYLES,
    Chart,
    clip,
    fmt_tick,
    marker,
    nice_range,
    polyline,
    svg_text,
)

__all__ = ["build"]

_PHASE_WORDS = {"init": "initial value", "input": "input", "forward": "forward output", "loss": "loss",
                "grad": "gradient", "param": "updated parameter", "metric": "metric", "custom": "custom event"}
_RANK_ORDER = {"numerics": 0, "possible": 1, "none": 2}


def build(kind: str, document: dict, sources: dict) -> tuple[Lead, list[Section], dict, list[str]]:
    """Lead, sections, the gathered data (embedded as JSON) and the input names for the header."""
    doc = document
    a, b = sources.get("a"), sources.get("b")
    identical = doc.get("identical")
    fd = doc.get("first_divergence")
    gathered: dict[str, Any] = {}
    if a is not None and b is not None:
        first = (int(fd["step"]), int(fd["index"])) if fd and fd.get("index") is not None else None
        gathered.update(D.diff_data(a, b, phases=doc.get("phases"), first=first))
    tone = "good" if identical else ("bad" if identical is False else "none")
    verdict = "IDENTICAL" if identical else ("DIFFERENT" if identical is False else "NOT COMPARED")
    if doc.get("different_models"):
        verdict, tone = "DIFFERENT MODELS", "bad"
    extra: list[Safe] = []
    if fd is not None:
        if "map" in gathered and gathered["map"].get("first") is not None:
            extra.append(el("p", None, el("a", {"href": "#first-divergence", "id": "first-divergence-link"},
                                          "Show the first divergence in the map"), " · ",
                            el("a", {"href": "#where"}, "its numbers")))
        else:
            extra.append(el("p", None, el("a", {"href": "#where", "id": "first-divergence-link"},
                                          "The first divergence, in numbers")))
    lead = Lead([doc.get("sentence") or ""], verdict, tone, extra)

    sections: list[Section] = []
    if kind == "check" and doc.get("runs"):
        sections.append(_check_section(doc))
    if fd is not None:
        sections.append(Section("where", "Where the runs part", _where(fd),
                                "The first event, in program order, whose digest differs between the two runs."))
    sections.append(Section("map", "Divergence map", _map_section(gathered.get("map"), doc),
                            "Rows are the recorded events in program order, columns the steps; each cell says "
                            "whether the two runs' tensors are bitwise identical."))
    sections.append(Section("growth", "How the difference grows", _growth_section(doc),
                            "After the first divergence, how far the parameters drift apart, step by step."))
    if fd is not None:
        sections.append(Section("ulp", "ULP distances at the first divergence", _ulp_section(gathered.get("ulp"), fd),
                                "A ULP is one step between adjacent floating-point numbers: 1 ULP is the smallest "
                                "possible difference, e.g. from summing in another order."))
    sections.append(Section("environment", "Environment differences", _env_section(doc.get("env_diff")),
                            "What differs between the machines or settings that recorded the traces, the "
                            "differences that can change numerics first."))
    sections.append(Section("inputs", "Traces and notes", _inputs_section(doc, gathered.get("traces"))))
    inputs = [str(doc.get("a") or a or "A"), str(doc.get("b") or b or "B")]
    return lead, sections, gathered, inputs


# --- check: the runs -----------------------------------------------------------------------------
def _check_section(doc: dict) -> Section:
    rows = []
    for i, r in enumerate(doc.get("runs") or []):
        rows.append([i + 1, str(r.get("status")), r.get("returncode"), (fmt(r.get("seconds")), r.get("seconds")),
                     str(r.get("trace") or "")])
    args = el("code", None, " ".join(map(str, doc.get("args") or []))) if doc.get("args") else "none"
    against = str(doc["against"]) if doc.get("against") else "no: runs compared with each other"
    body: list[Child] = [dl([("script", el("code", None, str(doc.get("script") or "?"))),
                             ("arguments", args),
                             ("against", against),
                             ("traces kept", str(doc["traces_kept"]) if doc.get("traces_kept") else "no (temporary)")]),
                          table([("run", "number"), ("status", "text"), ("exit code", "number"),
                                 ("seconds", "number"), ("trace", "text")], rows, caption="runs of the check")]
    comps = doc.get("comparisons") or []
    if len(comps) > 1:
        body.append(el("h3", None, "Every comparison"))
        body.append(table([("A", "text"), ("B", "text"), ("identical", "text"), ("sentence", "text")],
                          [[str(c.get("a")), str(c.get("b")), "yes" if c.get("identical") else "no",
                            code_text(str(c.get("sentence") or ""))] for c in comps], caption="comparisons"))
    return Section("runs", "The check's runs", frag(body),
                   "twinrun check ran the script in fresh processes and compared each run with the first.")


# --- the first divergence ------------------------------------------------------------------------
def _where(fd: dict) -> Safe:
    phase = str(fd.get("phase"))
    sa, sb = fd.get("stats_a") or {}, fd.get("stats_b") or {}
    items: list[tuple[str, Child]] = [
        ("step", fmt_int(fd.get("step"))),
        ("event", frag(el("code", None, str(fd.get("name"))), f" — {_PHASE_WORDS.get(phase, phase)} ({phase}), "
                                                              f"event {fmt_int(fd.get('index'))} of the step")),
        ("tensor", f"{fd.get('dtype')} {list(fd.get('shape') or [])}, {fmt_int(fd.get('size'))} values"),
    ]
    if fd.get("differing") is not None:
        items.append(("values that differ", f"{fmt_int(fd['differing'])} of {fmt_int(fd.get('size'))}"))
    else:
        items.append(("values that differ", "unknown: the values were not kept, only digests and statistics"))
    items += [("largest absolute difference", fmt(fd.get("max_abs"))),
              ("largest relative difference", fmt(fd.get("max_rel"))),
              ("largest ULP distance", fmt_int(fd.get("max_ulp")))]
    items.append(("L2 norm, A / B", f"{fmt(sa.get('l2'), 10)} / {fmt(sb.get('l2'), 10)}"))
    if sa.get("nonfinite") or sb.get("nonfinite"):
        items.append(("non-finite values, A / B", f"{fmt_int(sa.get('nonfinite'))} / {fmt_int(sb.get('nonfinite'))}"))
    smp = fd.get("samples")
    if fd.get("input_order_only") is not None:
        items.append(("same samples, other order", "yes" if fd["input_order_only"] else "no"))
    if isinstance(smp, dict):
        items.append(("samples", (f"{fmt_int(smp.get('count'))} in the batch; {fmt_int(smp.get('moved'))} positions "
                                  f"hold another sample; {fmt_int(smp.get('changed'))} have other content")))
    before = fd.get("before_checked") or []
    if fd.get("before_identical"):
        items.append(("before it", "every earlier event identical "
                                   f"(phases recorded before it: {', '.join(before) or 'none'})"))
    items.append(("digests A / B", el("code", None, f"{fd.get('digest_a')} / {fd.get('digest_b')}")))
    return dl(items)


# --- the map -------------------------------------------------------------------------------------
_FILL = {D.IDENTICAL: "#e4e4e0", D.SOME_DIFFER: "url(#tw-hatch-light)", D.DIFFER: "url(#tw-hatch)",
         D.NOT_RECORDED: "#ffffff", D.NOT_COMPARED: "url(#tw-dots)"}
_WORD = {D.IDENTICAL: "identical", D.SOME_DIFFER: "differs in some steps", D.DIFFER: "differs",
         D.NOT_RECORDED: "not recorded", D.NOT_COMPARED: "not compared (after a structural mismatch)"}


def _swatch(fill: str, outline: bool = False) -> Safe:
    return el("svg", {"width": 16, "height": 12, "aria-hidden": "true"},
              el("rect", {"x": 0.5, "y": 0.5, "width": 15, "height": 11, "fill": fill,
                          "stroke": "#000" if outline else "#999", "stroke-width": 2 if outline else 0.6}))


def _map_section(m: dict | None, doc: dict) -> Safe:
    if m is None:
        return unavailable("The divergence map needs the two traces themselves, which were not given. Render it "
                           "from the traces: ", el("code", None, "twinrun report A.trace B.trace -o report.html"), ".")
    if not m["rows"] or not m["columns"]:
        return unavailable("The traces have no recorded step in common: there is nothing to map.")
    nrows, ncols = len(m["rows"]), len(m["columns"])
    label_w = min(250, max(90, 7 * max(len(r["name"]) for r in m["rows"]) + 10))
    gutter = 56
    cw = max(5.0, min(22.0, 700.0 / ncols))
    ch = 15
    top = 34
    x0 = gutter + label_w
    width = int(x0 + ncols * cw + 12)
    height = int(top + nrows * ch + 8)
    out: list[Child] = []
    # column labels: every k-th step, so that they do not overlap
    every = max(1, math.ceil(34 / cw))
    for c, (lo, hi) in enumerate(m["columns"]):
        if c % every == 0 or (c == ncols - 1 and c % every > every // 2):
            text = str(lo) if lo == hi else f"{lo}"
            out.append(svg_text(x0 + c * cw + cw / 2, top - 8, text, anchor="middle", cls="lbl"))
    out.append(svg_text(x0, top - 22, "step" + (f" (columns of {m['bin']} steps)" if m["bin"] > 1 else "") + " →",
                     cls="ph"))
    last_phase = None
    for r, row in enumerate(m["rows"]):
        y = top + r * ch
        if row["phase"] != last_phase:
            if r:
                out.append(el("line", {"x1": 4, "x2": x0 + ncols * cw, "y1": y, "y2": y, "stroke": "#777",
                                       "stroke-width": 1}))
            out.append(svg_text(6, y + 11, row["phase"], cls="ph"))
            last_phase = row["phase"]
        out.append(el("text", {"x": x0 - 6, "y": num(y + 11), "text-anchor": "end", "class": "lbl"},
                      el("title", None, f"{row['name']} ({row['phase']})"), clip(row["name"], label_w - 8, 11)))
        for start, length, state in m["cells"][r]:
            if state == D.NOT_RECORDED:
                continue
            lo = m["columns"][start][0]
            hi = m["columns"][start + length - 1][1]
            span = f"step {lo}" if lo == hi else f"steps {lo}–{hi}"
            out.append(el("rect", {"x": num(x0 + start * cw), "y": y, "width": num(length * cw), "height": ch,
                                   "fill": _FILL[state]},
                          el("title", None, f"{row['name']} ({row['phase']}), {span}: {_WORD[state]}")))
    # white grid lines between cells
    grid = []
    if cw >= 7:
        grid += [f"M{num(x0 + c * cw)} {top}V{top + nrows * ch}" for c in range(1, ncols)]
    grid += [f"M{x0} {top + r * ch}H{num(x0 + ncols * cw)}" for r in range(1, nrows)]
    if grid:
        out.append(el("path", {"d": "".join(grid), "stroke": "#fff", "stroke-width": 1, "fill": "none"}))
    first = m.get("first")
    if first is not None:
        fx, fy = x0 + first["column"] * cw, top + first["row"] * ch
        out.append(el("rect", {"x": num(fx - 2), "y": fy - 2, "width": num(cw + 4), "height": ch + 4,
                               "fill": "none", "stroke": "#fff", "stroke-width": 2}))
        out.append(el("rect", {"id": "first-divergence", "class": "first", "tabindex": -1,
                               "x": num(fx), "y": fy, "width": num(cw), "height": ch, "fill": "url(#tw-hatch)"},
                      el("title", None, f"first divergence: {first['name']} ({first['phase']}), step {first['step']}")))
        out.append(marker("down", fx + cw / 2, top - 3.5, "#000", 3.5))
    s = m.get("structural")
    if s is not None:
        sx = x0 + (s["position"] // m["bin"]) * cw
        out.append(el("line", {"x1": num(sx), "x2": num(sx), "y1": top - 4, "y2": top + nrows * ch,
                               "stroke": "#000", "stroke-width": 2, "stroke-dasharray": "4 2"}))
    svg = el("svg", {"class": "chart map", "id": "map-chart", "viewBox": f"0 0 {width} {height}", "width": width,
                     "height": height, "role": "img", "aria-labelledby": "map-title map-desc",
                     "xmlns": "http://www.w3.org/2000/svg", "style": f"max-width:none;width:{width}px"},
             el("title", {"id": "map-title"}, "Divergence map: steps by events, identical or differing"),
             el("desc", {"id": "map-desc"}, _map_desc(m)), out)
    present = {st for row in m["cells"] for _, _, st in row}
    key = el("div", {"class": "keyrow", "aria-label": "key"},
             [el("span", None, _swatch(_FILL[s_]), _WORD[s_]) for s_ in
              (D.IDENTICAL, D.DIFFER, D.SOME_DIFFER, D.NOT_COMPARED) if s_ in present or s_ == D.IDENTICAL],
             el("span", None, _swatch("#fff"), "not recorded at that step") if D.NOT_RECORDED in present else None,
             el("span", None, _swatch("url(#tw-hatch)", True), "first divergence (▼ above its column)")
             if first is not None else None)
    caption = _map_desc(m)
    if m["bin"] > 1:
        caption += f" {m['steps']:,} steps are shown in columns of {m['bin']} consecutive steps."
    return frag(key, el("div", {"class": "scroll mapbox", "tabindex": 0, "role": "region",
                                "aria-label": "divergence map (scrolls)"}, svg),
                el("p", {"class": "caption"}, code_text(caption + " Hover a cell for its event and steps.")))


def _map_desc(m: dict) -> str:
    differing = sum(length for row in m["cells"] for _, length, st in row if st in (D.DIFFER, D.SOME_DIFFER))
    total = sum(length for row in m["cells"] for _, length, st in row if st != D.NOT_RECORDED)
    text = (f"{len(m['rows'])} events over {m['steps']} steps; {differing:,} of {total:,} cells differ.")
    f = m.get("first")
    if f is not None:
        text += f" The first divergence is at step {f['step']}, {f['phase']} `{f['name']}`."
    else:
        text += " Every cell is identical."
    if m.get("structural"):
        s = m["structural"]
        text += (f" At step {s['step']} the traces stop matching event for event (dashed line); "
                 "later cells are not compared.")
    return text


# --- growth ----------------------------------------------------------------------------------------
def _growth_section(doc: dict) -> Safe:
    g = list(doc.get("growth") or [])
    if not g:
        if doc.get("identical"):
            return unavailable("The runs are identical: nothing grows.")
        return unavailable("No step after the first divergence was compared, so there is no growth to show.")
    parts: list[Child] = []
    rel = [(r["step"], r.get("param_rel_diff"), r.get("param_basis")) for r in g]
    shown = [(s, v, bas) for s, v, bas in rel if isinstance(v, (int, float)) and math.isfinite(v)]
    steps = [r["step"] for r in g]
    xlo, xhi = min(steps), max(steps)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    if shown:
        positive = [v for _, v, _ in shown if v > 0]
        c = Chart("growth-chart", "Relative difference of the parameters by step (log scale)",
                  "For each step after the first divergence, the L2 norm of the difference of all parameters "
                  "divided by the L2 norm of run A's parameters.", width=520, height=280)
        if positive:
            lo = 10.0 ** math.floor(math.log10(min(positive)) + 1e-9)
            hi = 10.0 ** math.ceil(math.log10(max(positive)) - 1e-9)
            if hi / lo < 10.5:   # less than two decades: one more below, so the axis has three labels
                lo /= 10
        else:
            lo, hi = 1e-9, 1e-6
        c.scales(xlo, xhi, lo, hi, ylog=True)
        assert c.x is not None and c.y is not None
        has_zero = any(v == 0 for _, v, _ in shown)
        yt = [(v, fmt_tick(v)) for v in c.y.ticks()]
        c.axes("training step", "relative difference (log)", yticks=yt,
               xticks=_step_ticks(c, xlo, xhi))
        pts = [(c.x(s), c.y(v)) for s, v, _ in shown if v > 0]
        c.add(polyline(pts, STYLES[0][0]))
        for s, v, basis in shown:
            if v > 0:
                c.add(marker("circle", c.x(s), c.y(v), STYLES[0][0], 3.6, hollow=basis not in (None, "values")))
            else:  # zero cannot sit on a log axis: a marker on the axis, labelled
                c.add(marker("cross", c.x(s), c.y(lo), "#000", 3.5))
        cap = ("The L2 norm of the difference of all parameters over the L2 norm of A's parameters, after each step. "
               + ("Filled circles: computed from the kept parameter values. "
                  if any(b == "values" for *_, b in shown) else ""))
        if any(b not in (None, "values") for *_, b in shown):
            cap += ("Hollow circles: a lower bound from the norms alone (some parameters' values were not kept). ")
        if has_zero:
            cap += "Crosses on the axis: steps where the parameters were identical (zero has no place on a log scale). "
        last = shown[-1]
        cap += f"By step {last[0]} the relative difference is {fmt(last[1])}."
        parts.append(figure(c.render(), cap))
    # differing events per step
    c2 = Chart("events-chart", "Share of events that differ, by step",
               "For each compared step after the first divergence, the fraction of the step's recorded events whose "
               "digests differ.", width=520, height=280)
    c2.scales(xlo - 0.5, xhi + 0.5, 0, 100)
    assert c2.x is not None and c2.y is not None
    c2.axes("training step", "differing events (%)",
            yticks=[(v, f"{v:g}%") for v in (0, 25, 50, 75, 100)], xticks=_step_ticks(c2, xlo, xhi))
    bw = max(1.5, min(18.0, (c2.x(xlo + 1) - c2.x(xlo)) * 0.7)) if xhi > xlo else 18.0
    for r in g:
        frac = 100.0 * r["differing"] / r["events"] if r.get("events") else 0.0
        x = c2.x(r["step"])
        c2.add(el("rect", {"x": num(x - bw / 2), "y": num(c2.y(frac)), "width": num(bw),
                           "height": num(c2.y(0) - c2.y(frac)), "fill": BAR_FILLS[1], "stroke": "#333",
                           "stroke-width": 0.5},
                  el("title", None, f"step {r['step']}: {r['differing']} of {r['events']} events differ")))
    parts.append(figure(c2.render(), "The share of each step's recorded events whose digests differ (hover a bar "
                                     "for the counts). Once the parameters differ, nearly every later event does too."))
    return el("div", {"class": "grid2"}, parts)


def _step_ticks(c: Chart, lo: float, hi: float) -> list[tuple[float, str]]:
    from ._svg import nice_ticks

    ticks = [t for t in nice_ticks(lo, hi, 8) if float(t).is_integer() and lo <= t <= hi]
    return [(t, f"{int(t)}") for t in ticks] or [(lo, f"{int(lo)}")]


# --- ULP histogram ---------------------------------------------------------------------------------
def _ulp_section(u: dict | None, fd: dict) -> Safe:
    if u is None:
        if fd.get("max_ulp") is not None:
            return unavailable(f"The traces were not given, so only the largest distance is known: "
                               f"{fmt_int(fd['max_ulp'])} ULP. Render from the traces for the histogram.")
        return unavailable("The histogram needs the two traces, which were not given.")
    if not u.get("available"):
        return unavailable(str(u.get("why")))
    bins = u["bins"]
    if not bins:
        return unavailable(f"No value differs by a measurable number of ULPs ({fmt_int(u['nan'])} pairs hold a NaN).")
    c = Chart("ulp-chart", f"Histogram of ULP distances at {u['name']} ({u['phase']}), step {u['step']}",
              "How many of the differing values lie at each distance, in bins of powers of two.", height=290)
    n = len(bins)
    top = max(b["count"] for b in bins)
    _, yhi = nice_range(0, top, 5)
    c.scales(-0.5, n - 0.5, 0, yhi)
    assert c.x is not None and c.y is not None
    labels = [(float(i), _bin_label(b)) for i, b in enumerate(bins)]
    step = max(1, math.ceil(n / 14))
    c.axes("ULP distance (bins: 1, 2–3, 4–7, …; label = bin start)", "values (count)",
           xticks=[t for i, t in enumerate(labels) if i % step == 0])
    bw = (c.x(1) - c.x(0)) * 0.78
    for i, b in enumerate(bins):
        x = c.x(i)
        h = c.y(0) - c.y(b["count"])
        c.add(el("rect", {"x": num(x - bw / 2), "y": num(c.y(b["count"])), "width": num(bw), "height": num(h),
                          "fill": BAR_FILLS[0], "stroke": "#222", "stroke-width": 0.5},
                 el("title", None, f"{_bin_range(b)} ULP: {b['count']:,} values")))
        if b["count"]:
            c.add(svg_text(x, c.y(b["count"]) - 4, f"{b['count']:,}", anchor="middle", cls="tl"))
    cap = (f"{u['differing']:,} of {u['compared']:,} values differ (median {u['median_ulp']:,} ULP, largest "
           f"{u['max_ulp']:,} ULP); the {u['identical']:,} identical values are not drawn.")
    if u.get("nan"):
        cap += f" {u['nan']:,} pairs hold a NaN and have no distance."
    cap += (" Distances of a few ULP are typical of summing in another order (threads, kernels); millions of ULP "
            "mean other values altogether (another seed, other data).")
    return figure(c.render(), cap)


def _bin_label(b: dict) -> str:
    lo = b["lo"]
    if lo < 1024:
        return str(lo)
    k = lo.bit_length() - 1
    return f"2^{k}"


def _bin_range(b: dict) -> str:
    return f"{b['lo']:,}" if b["lo"] == b["hi"] else f"{b['lo']:,}–{b['hi']:,}"


# --- environment ----------------------------------------------------------------------------------
def _env_section(env: dict | None) -> Safe:
    if not env:
        return unavailable("The traces carry no environment fingerprint to compare.")
    diffs = list(env.get("differences") or [])
    if not diffs:
        return note("The two environments are the same in every recorded fact.")
    diffs.sort(key=lambda d: (_RANK_ORDER.get(str(d.get("rank")), 3), str(d.get("key"))))
    main = [d for d in diffs if d.get("rank") != "none"]
    rest = [d for d in diffs if d.get("rank") == "none"]
    cols = [("rank", "text"), ("key", "text"), ("A", "text"), ("B", "text"), ("why it matters", "text")]

    def rows(ds: list[dict]) -> list[list[Any]]:
        return [[(str(d.get("rank") or "?"), str(_RANK_ORDER.get(str(d.get("rank")), 3))),
                 el("code", None, str(d.get("key"))), _short(d.get("a")), _short(d.get("b")),
                 str(d.get("why") or "")] for d in ds]

    parts: list[Child] = []
    counts = env.get("counts") or {}
    if counts:
        parts.append(el("p", {"class": "caption"},
                        f"{counts.get('numerics', 0)} can change numerics, {counts.get('possible', 0)} possibly, "
                        f"{counts.get('none', 0)} cannot (host names, paths, times)."))
    if main:
        parts.append(table(cols, rows(main), sortable=True, caption="environment differences", ident="env-table"))
    if rest:
        parts.append(el("details", None, el("summary", None, f"{len(rest)} differences that cannot change numerics"),
                        table(cols, rows(rest), caption="environment differences that cannot change numerics")))
    return frag(parts)


def _short(v: Any, width: int = 60) -> str:
    s = "—" if v is None else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


# --- inputs ----------------------------------------------------------------------------------------
def _inputs_section(doc: dict, traces: list[dict] | None) -> Safe:
    parts: list[Child] = []
    if traces:
        parts.append(table([("", "text"), ("file", "text"), ("status", "text"), ("steps", "number"),
                            ("script", "text"), ("arguments", "text")],
                           [[label, t["file"], str(t["status"]), t["steps"], str(t.get("script") or "?"),
                             " ".join(map(str, t.get("script_args") or []))] for label, t in zip("AB", traces)],
                           caption="the two traces"))
    parts.append(dl([("steps compared", fmt_int(doc.get("steps_compared"))),
                     ("events compared", fmt_int(doc.get("events_compared"))),
                     ("steps in A / B", f"{fmt_int(doc.get('steps_a'))} / {fmt_int(doc.get('steps_b'))}"),
                     ("status of A / B", f"{doc.get('status_a')} / {doc.get('status_b')}"),
                     ("phases compared", ", ".join(map(str, doc.get("phases") or [])))]))
    for n in doc.get("notes") or []:
        parts.append(note("Note: ", str(n)))
    for s in doc.get("structural") or []:
        parts.append(note(f"Structural mismatch ({s.get('kind')}) at step {s.get('step')}, event {s.get('index')}: "
                          f"A has {_ev(s.get('a'))}, B has {_ev(s.get('b'))}."))
    return frag(parts)


def _ev(e: dict | None) -> str:
    if not e:
        return "nothing"
    return f"{e.get('name')} ({e.get('phase')}, {e.get('dtype')}{e.get('shape')})"
