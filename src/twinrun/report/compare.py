"""The compare page: interval estimates per arm, probability of improvement, performance profiles,
learning curves, variance by source, seeds needed, and every run."""

from __future__ import annotations

import math
import re
from typing import Any

from . import data as D
from ._aggregate import finite, finite_values, learning_curve, profile
from ._html import Child, Safe, el, frag, num
from ._page import Lead, Section, figure, fmt, fmt_int, table, unavailable
from ._svg import (
    BAR_FILLS,
    STYLES,
    Chart,
    band,
    clip,
    fmt_tick,
    legend,
    marker,
    nice_range,
    polyline,
    svg_text,
)
from .compare_tables import runs_table, tests_section, variance_section

__all__ = ["build"]

_STATS = (("mean", "Mean"), ("median", "Median"), ("iqm", "IQM"))


def build(doc: dict, sources: dict) -> tuple[Lead, list[Section], dict, list[str]]:
    two = doc.get("b") is not None
    metrics = doc.get("metrics") or {}
    files = []
    for key in ("a", "b"):
        if sources.get(key):
            files.append(D.sweep_runs(sources[key]))
    verdicts = [str(m.get("verdict") or "") for m in metrics.values() if isinstance(m, dict)]
    verdicts += [f"{name}: skipped: {why}" for name, why in (doc.get("skipped") or {}).items()]
    if two:
        sig = bool(doc.get("significant"))
        lead = Lead(verdicts, "DIFFERENT BEYOND SEED NOISE" if sig else "NO DETECTABLE DIFFERENCE",
                    "bad" if sig else "good")
    else:
        lead = Lead(verdicts, "SUMMARY OVER SEEDS", "none")
    arms = _arms(doc, files)            # [(label, style, file index, arm name or None)]
    sections: list[Section] = []
    gathered: dict[str, Any] = {"files": [{k: v for k, v in f.items() if k != "runs"} for f in files],
                                "curves": {}, "profiles": {}}
    sections.append(Section("intervals", "Interval estimates",
                            _intervals(doc, two),
                            "Each statistic over seeds, with its 95% bootstrap confidence interval (bar: the interval; "
                            "marker: the estimate). IQM is the mean of the middle 50% of runs: robust to outliers, "
                            "less noisy than the median."))
    if two:
        sections.append(Section("improvement", "Probability of improvement", _improvement(metrics),
                                "P(A better than B): the chance that a random run of A beats a random run of B (ties "
                                "count half), with its 95% interval. 0.5 means no difference."))
    if files:
        prof, data_prof = _profiles(doc, files, arms, two)
        gathered["profiles"] = data_prof
        sections.append(Section("profiles", "Performance profiles", prof,
                                "The whole distribution of final scores across seeds: for each score on the x axis, "
                                "the fraction of runs that reach it. A curve further right (higher is better) or "
                                "further left (lower is better) is better at every level."))
        curves, data_curves = _curves(doc, files, arms)
        gathered["curves"] = data_curves
        sections.append(Section("curves", "Learning curves", curves,
                                "The metric at each logged step: the IQM across runs (line) and its 95% bootstrap "
                                "interval over runs (band)."))
    else:
        for ident, head in (("profiles", "Performance profiles"), ("curves", "Learning curves")):
            sections.append(Section(ident, head, unavailable(
                "This needs the runs themselves, which were not given: render from the results files, ",
                el("code", None, "twinrun report A.db B.db -o report.html"), ".")))
    if two:
        sections.append(Section("tests", "Tests, effect sizes and seeds needed", tests_section(doc),
                                "Welch's t-test decides (Holm-adjusted when several metrics are compared); "
                                "the seeds needed are per arm, for 80% power to detect the observed effect."))
    if doc.get("variance"):
        sections.append(Section("variance", "Variance by source", variance_section(doc["variance"]),
                                "How much of the seed-to-seed variance each source causes, from three arms that vary "
                                "only the weights' seed, only the data seed, or nothing."))
    sections.append(Section("runs", "Every run", runs_table(files, metrics, two),
                            "Every run in the results files, failed and excluded ones included. Sort by any column: "
                            "click its heading, or Tab to it and press Enter."))
    inputs = [str(doc.get("a"))] + ([str(doc.get("b"))] if two else [])
    return lead, sections, gathered, inputs


# --- arms ------------------------------------------------------------------------------------------
def _arms(doc: dict, files: list[dict]) -> list[tuple[str, int, int, str | None]]:
    if doc.get("b") is not None:
        return [("A", 0, 0, None), ("B", 1, 1, None)]
    if files and files[0].get("design") == "variance":
        names = sorted({r["arm"] for r in files[0]["runs"]}, key=lambda a: (["init", "data", "none"] + [a]).index(a))
        return [(f"{a} arm", i, 0, a) for i, a in enumerate(names)]
    return [("A", 0, 0, None)]


def _label_split(label: str, variance: bool) -> tuple[str, str | None]:
    """``"accuracy (init arm)"`` -> ``("accuracy", "init")`` for a variance sweep's one-file summary."""
    if variance:
        m = re.match(r"^(.*) \(([^()]+) arm\)$", label, re.DOTALL)
        if m:
            return m.group(1), m.group(2)
    return label, None


def _groups(doc: dict) -> list[tuple[str, list[tuple[str, dict, int]]]]:
    """Per metric: ``[(arm label, summary dict, style)]`` from the document alone."""
    metrics = doc.get("metrics") or {}
    if doc.get("b") is not None:
        out = []
        for name, m in metrics.items():
            c = m.get("comparison") or {}
            out.append((name, [("A", c.get("a") or {}, 0), ("B", c.get("b") or {}, 1)]))
        return out
    variance = bool(doc.get("variance"))
    grouped: dict[str, list[tuple[str, dict, int]]] = {}
    for label, s in metrics.items():
        base, arm = _label_split(label, variance)
        rows = grouped.setdefault(base, [])
        style = ["init", "data", "none"].index(arm) if arm in ("init", "data", "none") else len(rows)
        rows.append((f"{arm} arm" if arm else "A", s, style))
    return [(name, sorted(rows, key=lambda r: r[2])) for name, rows in grouped.items()]


# --- interval estimates ------------------------------------------------------------------------------
def _intervals(doc: dict, two: bool) -> Safe:
    parts: list[Child] = []
    for mi, (name, rows) in enumerate(_groups(doc)):
        parts.append(el("h3", None, name))
        parts.append(figure(_interval_chart(f"ci-{mi}", name, rows),
                            f"95% bootstrap intervals ({_methods(rows)}); n = "
                            + ", ".join(f"{lab}: {fmt_int(s.get('n'))}" for lab, s, _ in rows) + "."))
        cols = [("statistic", "text")] + [(lab, "text") for lab, _, _ in rows]
        trows = []
        for key, word in _STATS + (("std", "Std. dev."),):
            trows.append([word] + [_est(s.get(key)) for _, s, _ in rows])
        if two:
            c = (doc["metrics"][name].get("comparison") or {})
            cols.append(("A − B", "text"))
            for r, dkey in zip(trows, ("diff_mean", None, "diff_iqm", None)):
                r.append(_est(c.get(dkey)) if dkey else "—")
        parts.append(table(cols, trows, caption=f"interval estimates of {name}"))
    if not parts:
        return unavailable("No metric could be analysed.")
    return frag(parts)


def _methods(rows: list[tuple[str, dict, int]]) -> str:
    ms = sorted({str((s.get(k) or {}).get("method")) for _, s, _ in rows for k, _ in _STATS if s.get(k)})
    return "; ".join(ms) or "bootstrap"


def _est(e: Any) -> str:
    if not isinstance(e, dict):
        return "—"
    return f"{fmt(e.get('value'), 4)} [{fmt(e.get('low'), 4)}, {fmt(e.get('high'), 4)}]"


def _interval_chart(ident: str, name: str, rows: list[tuple[str, dict, int]]) -> Safe:
    panels = len(_STATS)
    lab_w = 74
    width = 960
    pw = (width - lab_w - 12) / panels
    gap = 30
    rh = 26
    height = 40 + rh * len(rows) + 46
    c = Chart(ident, f"Interval estimates of {name}",
              f"Mean, median and IQM of {name} for each arm with 95% bootstrap intervals.",
              width=width, height=height, left=lab_w, top=34)
    out: list[Child] = []
    for pi, (key, word) in enumerate(_STATS):
        x0 = lab_w + pi * pw + 8
        x1 = x0 + pw - gap
        vals: list[float] = [v for _, s, _ in rows for v in _triple(s.get(key))]
        if not vals:
            continue
        lo, hi = nice_range(min(vals), max(vals), 3)
        sx = lambda v, lo=lo, hi=hi, x0=x0, x1=x1: x0 + (v - lo) / (hi - lo) * (x1 - x0)
        y0, y1 = 34, 34 + rh * len(rows)
        out.append(svg_text((x0 + x1) / 2, 22, word, anchor="middle", weight="650"))
        for t in _ticks(lo, hi):
            px = sx(t)
            out.append(el("line", {"x1": num(px), "x2": num(px), "y1": y0, "y2": y1, "class": "grid"}))
            out.append(svg_text(px, y1 + 14, fmt_tick(t), anchor="middle", cls="tl"))
        out.append(el("path", {"d": f"M{num(x0)} {y1}H{num(x1)}", "class": "axis"}))
        for ri, (lab, s, style) in enumerate(rows):
            e = s.get(key) or {}
            y = y0 + rh * ri + rh / 2
            if pi == 0:
                out.append(svg_text(lab_w - 6, y + 4, clip(lab, lab_w - 8), anchor="end"))
            if finite(e.get("low")) and finite(e.get("high")):
                a, b = sx(e["low"]), sx(e["high"])
                out.append(el("rect", {"x": num(min(a, b)), "y": num(y - 6), "width": num(max(abs(b - a), 1.5)),
                                       "height": 12, "fill": BAR_FILLS[style % len(BAR_FILLS)], "fill-opacity": 0.75,
                                       "stroke": "#222", "stroke-width": 0.6},
                              el("title", None, f"{lab}, {word}: {_est(e)}")))
            if finite(e.get("value")):
                shape = STYLES[style % len(STYLES)][1]
                out.append(marker(shape, sx(e["value"]), y, "#000", 3.2))
    out.append(svg_text(lab_w + (width - lab_w) / 2, height - 10, f"{name} (as logged by the script)", anchor="middle",
                     cls="al"))
    c.add(*out)
    return c.render()


def _short(arm: str) -> str:
    """An arm's name in a legend: "init" for "init arm"."""
    return arm.removesuffix(" arm")


def _triple(e: Any) -> list[float]:
    """The finite ones of an estimate's value, low and high."""
    if not isinstance(e, dict):
        return []
    return [float(e[k]) for k in ("value", "low", "high") if finite(e.get(k))]


def _ticks(lo: float, hi: float) -> list[float]:
    from ._svg import nice_ticks

    return [t for t in nice_ticks(lo, hi, 3) if lo - 1e-12 <= t <= hi + 1e-12]


# --- probability of improvement -----------------------------------------------------------------------
def _improvement(metrics: dict) -> Safe:
    rows = [(name, (m.get("comparison") or {}).get("prob_improvement") or {}, m.get("direction"))
            for name, m in metrics.items()]
    if not rows:
        return unavailable("No metric was compared.")
    lab_w = 150
    c = Chart("poi-chart", "Probability of improvement, P(A better than B)",
              "For each metric, the probability that a run of A beats a run of B, with its 95% interval; "
              "0.5 means no difference.", height=40 + 30 * len(rows) + 46, left=lab_w, top=20)
    c.scales(0, 1, 0, len(rows))
    assert c.x is not None and c.y is not None
    c.axes("P(A better than B) (probability, 0 to 1)", "",
           xticks=[(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)], yticks=[], xgrid=True, ygrid=False)
    c.add(el("line", {"x1": num(c.x(0.5)), "x2": num(c.x(0.5)), "y1": c.top, "y2": num(c.y(0)), "stroke": "#000",
                      "stroke-dasharray": "5 3"}))
    for i, (name, e, direction) in enumerate(rows):
        y = c.y(len(rows) - i - 0.5)
        c.add(svg_text(lab_w - 8, y + 4, clip(name, lab_w - 12), anchor="end"))
        if finite(e.get("low")) and finite(e.get("high")):
            width = max(c.x(e["high"]) - c.x(e["low"]), 1.5)
            c.add(el("rect", {"x": num(c.x(e["low"])), "y": num(y - 6), "width": num(width),
                              "height": 12, "fill": BAR_FILLS[0], "fill-opacity": 0.7, "stroke": "#222",
                              "stroke-width": 0.6},
                     el("title", None, f"{name}: {_est(e)} ({direction})")))
        if finite(e.get("value")):
            c.add(marker("diamond", c.x(e["value"]), y, "#000", 4))
            c.add(svg_text(c.x(e["value"]), y - 10, fmt(e["value"], 2), anchor="middle", cls="tl"))
    return figure(c.render(), "Right of the dashed line: A tends to beat B; left: B tends to beat A. 'Better' follows "
                              "each metric's direction (higher or lower is better), as listed under Tests.")


# --- performance profiles -------------------------------------------------------------------------------
def _series_runs(files: list[dict], arm: tuple[str, int, int, str | None]) -> list[dict]:
    _, _, fi, name = arm
    if fi >= len(files):
        return []
    return [r for r in files[fi]["runs"] if name is None or r["arm"] == name]


def _metric_names(doc: dict, files: list[dict]) -> list[tuple[str, bool | None]]:
    """Metric names and direction (True: higher is better; None: not stated)."""
    metrics = doc.get("metrics") or {}
    if doc.get("b") is not None:
        return [(n, m.get("direction") == "higher is better") for n, m in metrics.items()]
    names = []
    for label in metrics:
        base, _ = _label_split(label, bool(doc.get("variance")))
        if base not in names:
            names.append(base)
    return [(n, None) for n in names]


def _profiles(doc: dict, files: list[dict], arms: list, two: bool) -> tuple[Safe, dict]:
    parts: list[Child] = []
    data: dict = {}
    for mi, (name, higher) in enumerate(_metric_names(doc, files)):
        series = []
        for arm in arms:
            vals = finite_values(_series_runs(files, arm), name)
            if vals:
                series.append((arm, profile(vals, True if higher is None else higher)))
        if not series:
            continue
        data[name] = {arm[0]: p for arm, p in series}
        cmp_word = "≥" if higher is not False else "≤"
        c = Chart(f"profile-{mi}", f"Performance profile of {name}",
                  f"For each value of {name}, the fraction of runs whose final {name} is {cmp_word} that value.",
                  width=520, height=270, top=36)
        allv = [v for _, p in series for v in p["values"]]
        lo, hi = nice_range(min(allv), max(allv), 5)
        c.scales(lo, hi, 0, 1)
        assert c.x is not None and c.y is not None
        c.axes(f"final {name} (as logged)", f"fraction of runs {cmp_word} x",
               yticks=[(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)])
        for arm, p in series:
            colour, shape, dash = STYLES[arm[1] % len(STYLES)]
            pts = _steps(p, lo, hi, higher is not False, c)
            c.add(polyline(pts, colour, dash))
            for v, f in zip(p["values"], p["fraction"]):
                c.add(marker(shape, c.x(v), c.y(f), colour, 3.2))
        c.add(legend([(f"{_short(arm[0])} (n = {p['n']})", arm[1]) for arm, p in series], c.left + 4, 16,
                     max_width=c.width - c.left))
        if higher is None:   # one file: no direction was chosen, so nothing is called better
            cap = f"Each marker is one run: the fraction of runs whose final {name} is at least that value."
        else:
            cap = (f"Each marker is one run. {'Higher' if higher else 'Lower'} {name} is better "
                   f"({doc['metrics'][name].get('direction_source')}).")
        parts.append(figure(c.render(), cap))
    if not parts:
        return unavailable("No finished run has a finite final value of any metric."), data
    return el("div", {"class": "grid2"}, parts), data


def _steps(p: dict, lo: float, hi: float, higher: bool, c: Chart) -> list[tuple[float, float]]:
    """The profile as a step line across [lo, hi]."""
    assert c.x is not None and c.y is not None
    v, n = p["values"], p["n"]
    pts: list[tuple[float, float]] = []
    if higher:  # fraction >= x: 1 up to the lowest run, then falls at each run
        level = 1.0
        pts.append((c.x(lo), c.y(level)))
        for i, x in enumerate(v):
            pts.append((c.x(x), c.y(level)))
            level = (n - i - 1) / n
            pts.append((c.x(x), c.y(level)))
        pts.append((c.x(hi), c.y(level)))
    else:       # fraction <= x: 0 up to the lowest run, then rises
        level = 0.0
        pts.append((c.x(lo), c.y(level)))
        for i, x in enumerate(v):
            pts.append((c.x(x), c.y(level)))
            level = (i + 1) / n
            pts.append((c.x(x), c.y(level)))
        pts.append((c.x(hi), c.y(level)))
    return pts


# --- learning curves ---------------------------------------------------------------------------------------
def _curves(doc: dict, files: list[dict], arms: list) -> tuple[Safe, dict]:
    parts: list[Child] = []
    data: dict = {}
    for mi, (name, _) in enumerate(_metric_names(doc, files)):
        series = []
        for arm in arms:
            lc = learning_curve(_series_runs(files, arm), name)
            if lc is not None:
                series.append((arm, lc))
        if not series:
            continue
        data[name] = {arm[0]: lc for arm, lc in series}
        c = Chart(f"curve-{mi}", f"Learning curve of {name}",
                  f"The IQM of {name} across runs at each logged step, with a 95% bootstrap band.", width=520,
                  height=280, top=36)
        xs = [s for _, lc in series for s in lc["steps"]]
        ys = [v for _, lc in series for k in ("low", "high", "iqm") for v in lc[k]]
        ylo, yhi = nice_range(min(ys), max(ys), 5)
        c.scales(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, ylo, yhi)
        assert c.x is not None and c.y is not None
        c.axes("training step (as logged)", f"{name} (IQM across runs)")
        for arm, lc in series:
            colour, shape, dash = STYLES[arm[1] % len(STYLES)]
            up = [(c.x(s), c.y(h)) for s, h in zip(lc["steps"], lc["high"])]
            dn = [(c.x(s), c.y(lo)) for s, lo in zip(lc["steps"], lc["low"])]
            c.add(band(up, dn, colour, dash))
        for arm, lc in series:
            colour, shape, dash = STYLES[arm[1] % len(STYLES)]
            pts = [(c.x(s), c.y(v)) for s, v in zip(lc["steps"], lc["iqm"])]
            c.add(polyline(pts, colour, dash, 2.2))
            every = max(1, math.ceil(len(pts) / 12))
            for i in range(0, len(pts), every):
                c.add(marker(shape, pts[i][0], pts[i][1], colour, 3.2))
        c.add(legend([(f"{_short(arm[0])} (n = {min(lc['n'])}–{max(lc['n'])})" if min(lc['n']) != max(lc['n'])
                       else f"{_short(arm[0])} (n = {lc['n'][0]})", arm[1]) for arm, lc in series], c.left + 4, 16,
                     max_width=c.width - c.left))
        parts.append(figure(c.render(), "Line: IQM across runs; band (thin dashed edges): 95% percentile-bootstrap "
                                        "interval over runs, 2,000 resamples. Markers show the series' shape, not "
                                        "every point."))
    if not parts:
        return unavailable("No metric was logged at more than one step by at least two runs; log a series with ",
                           el("code", None, "twinrun.log_metric(name, value, step=i)"), "."), data
    return el("div", {"class": "grid2"}, parts), data
