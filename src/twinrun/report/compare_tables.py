"""The compare page's tables: tests, effect sizes and seeds needed; variance by source; every run."""

from __future__ import annotations

from typing import Any

from ._aggregate import finite
from ._html import Child, Safe, el, frag, num
from ._page import figure, fmt, fmt_int, note, table, unavailable
from ._svg import BAR_FILLS, Chart, svg_text

__all__ = ["runs_table", "tests_section", "variance_section"]

_SOURCE_WORDS = {"init": "init (the weights' seed)", "data": "data (order and augmentation seed)",
                 "none": "nothing varied (nondeterminism)"}


# --- tests -------------------------------------------------------------------------------------------------
def tests_section(doc: dict) -> Safe:
    rows = []
    sentences: list[Child] = []
    for name, m in (doc.get("metrics") or {}).items():
        c = m.get("comparison") or {}
        rows.append([name, f"{m.get('direction')} ({m.get('direction_source')})",
                     (fmt(c.get("welch_p")), c.get("welch_p") if finite(c.get("welch_p")) else ""),
                     (fmt(c.get("p_decision")), c.get("p_decision") if finite(c.get("p_decision")) else ""),
                     (fmt(c.get("mannwhitney_p")), c.get("mannwhitney_p") if finite(c.get("mannwhitney_p")) else ""),
                     (fmt(c.get("cohens_d")), c.get("cohens_d") if finite(c.get("cohens_d")) else ""),
                     (fmt(c.get("cliffs_delta")), c.get("cliffs_delta") if finite(c.get("cliffs_delta")) else ""),
                     (fmt_int(c.get("seeds_needed")), c.get("seeds_needed") if c.get("seeds_needed") else ""),
                     f"{fmt_int(c.get('n_a'))} / {fmt_int(c.get('n_b'))}",
                     "A" if c.get("better") == "A" else ("B" if c.get("better") == "B" else "neither")])
        sentences.append(el("li", None, _seeds_sentence(name, c)))
        for n in c.get("notes") or []:
            sentences.append(el("li", None, f"{name}: {n}"))
    cols = [("metric", "text"), ("direction", "text"), ("Welch p", "number"), ("p used (Holm)", "number"),
            ("Mann-Whitney p", "number"), ("Cohen's d", "number"), ("Cliff's delta", "number"),
            ("seeds needed per arm", "number"), ("runs A / B", "text"), ("better", "text")]
    return frag(table(cols, rows, sortable=True, caption="tests and effect sizes", ident="tests-table"),
                el("ul", None, sentences))


def _seeds_sentence(name: str, c: dict) -> str:
    need = c.get("seeds_needed")
    have = f"you have {fmt_int(c.get('n_a'))} and {fmt_int(c.get('n_b'))}"
    if not need:
        return f"{name}: the means are equal, so no number of seeds would detect a difference ({have})."
    return (f"{name}: to detect a difference of the observed size (Cohen's d = {fmt(c.get('cohens_d'))}) "
            f"with 80% power at α = {fmt(c.get('alpha'))}, about {need:,} seeds per arm are needed; {have}.")


# --- variance -----------------------------------------------------------------------------------------------
def variance_section(variance: dict) -> Safe:
    parts: list[Child] = []
    for mi, (name, v) in enumerate(variance.items()):
        if not isinstance(v, dict):
            continue
        if "error" in v:
            parts.append(note(f"{name}: {v['error']}"))
            continue
        shares = v.get("shares") or {}
        srcs = [s for s in ("init", "data", "none") if s in shares]
        parts.append(el("h3", None, name))
        lab_w = 220
        c = Chart(f"variance-{mi}", f"Share of the variance of {name} by source",
                  f"For {name}, the share of seed-to-seed variance from each source with 95% intervals.",
                  height=40 + 32 * len(srcs) + 46, left=lab_w, top=20)
        c.scales(0, 100, 0, len(srcs))
        assert c.x is not None and c.y is not None
        c.axes("share of the variance (%)", "", xticks=[(x, f"{x}%") for x in (0, 25, 50, 75, 100)], yticks=[],
               xgrid=True, ygrid=False)
        for i, s in enumerate(srcs):
            e = shares[s]
            y = c.y(len(srcs) - i - 0.5)
            c.add(svg_text(lab_w - 8, y + 4, _SOURCE_WORDS.get(s, s), anchor="end"))
            if not finite(e.get("value")):
                c.add(svg_text(c.x(0) + 6, y + 4, "undefined (no arm varies)", cls="tl"))
                continue
            w = c.x(100 * e["value"]) - c.x(0)
            ci = finite(e.get("low")) and finite(e.get("high"))
            words = f"{_pct(e['value'])}" + (f" [{_pct(e['low'])}, {_pct(e['high'])}]" if ci else " (no interval)")
            c.add(el("rect", {"x": num(c.x(0)), "y": num(y - 9), "width": num(max(w, 0.8)), "height": 18,
                              "fill": BAR_FILLS[i], "stroke": "#222", "stroke-width": 0.6},
                     el("title", None, f"{s}: {words}")))
            right = c.x(100 * e["value"])
            if ci:
                a, b = c.x(100 * e["low"]), c.x(100 * e["high"])
                right = max(right, b)
                c.add(el("path", {"d": f"M{num(a)} {num(y)}H{num(b)}M{num(a)} {num(y - 5)}V{num(y + 5)}"
                                       f"M{num(b)} {num(y - 5)}V{num(y + 5)}", "stroke": "#000", "stroke-width": 1.4,
                                  "fill": "none"}))
            c.add(svg_text(min(right + 6, c.width - 40), y + 4, _pct(e["value"]), cls="tl"))
        cap = ("Variances (ddof 1): " + ", ".join(f"{s} {fmt((v.get('variances') or {}).get(s))}" for s in srcs)
               + "; runs per arm: " + ", ".join(f"{s} {fmt_int((v.get('n') or {}).get(s))}" for s in srcs) + ".")
        parts.append(figure(c.render(), cap))
        for n in v.get("notes") or []:
            parts.append(note(f"{name}: {n}"))
    return frag(parts) if parts else unavailable("No metric has a variance decomposition.")


def _pct(x: Any) -> str:
    return f"{100 * x:.0f}%" if finite(x) else "—"


# --- runs ---------------------------------------------------------------------------------------------------
def runs_table(files: list[dict], metrics: dict, two: bool) -> Safe:
    if not files:
        return unavailable("The runs are in the results files, which were not given: ",
                           el("code", None, "twinrun report A.db [B.db] -o report.html"), ".")
    names = sorted({n for f in files for r in f["runs"] for n in r["metrics"]})
    cols = [("file", "text"), ("arm", "text"), ("run", "number"), ("seed", "number"), ("status", "text"),
            ("exit code", "number"), ("seconds", "number")] + [(n, "number") for n in names] + [("note", "text")]
    rows: list[list[Any]] = []
    classes: list[str | None] = []
    counts = {"ok": 0, "failed": 0, "excluded": 0}
    for fi, f in enumerate(files):
        label = "AB"[fi] if two else "A"
        for r in f["runs"]:
            bad = [n for n, v in r["metrics"].items() if not finite(v)]
            cells: list[Any] = [f"{label}: {f['file']}", str(r["arm"]), r["idx"],
                                (fmt_int(r["seed"]) if r["seed"] is not None else "—",
                                 r["seed"] if r["seed"] is not None else ""),
                                el("strong", None, "FAILED") if r["status"] != "ok" else "ok",
                                (fmt_int(r["returncode"]) if r["returncode"] is not None else "—",
                                 r["returncode"] if r["returncode"] is not None else ""),
                                (fmt(r["duration"]), r["duration"] if r["duration"] is not None else "")]
            for n in names:
                v = r["metrics"].get(n)
                if v is None:
                    cells.append(("—", ""))
                elif finite(v):
                    cells.append((fmt(v, 4), repr(float(v))))
                else:
                    cells.append((f"{v} (excluded)", ""))
            if r["status"] != "ok":
                cells.append(f"failed: {r['error'] or 'no error text'}")
                classes.append("failed")
                counts["failed"] += 1
            elif bad:
                cells.append(f"excluded from {', '.join(bad)}: not a finite number")
                classes.append("excluded")
                counts["excluded"] += 1
            else:
                cells.append("")
                classes.append(None)
                counts["ok"] += 1
            rows.append(cells)
    summary = el("p", {"class": "caption"},
                 f"{sum(counts.values()):,} runs: {counts['ok']:,} finished, {counts['failed']:,} failed "
                 f"(striped orange), {counts['excluded']:,} with a value excluded as NaN or infinite (striped blue). "
                 "Failed runs and excluded values are left out of every statistic above.")
    return frag(summary, table(cols, rows, sortable=True, caption="runs", row_classes=classes, ident="runs-table"))
