"""The doctor page: the verdict, the fix to copy, the cause with its evidence, the ledger of experiments,
portability across threads and CPUs."""

from __future__ import annotations

import math
import re
from typing import Any

from ._html import Child, Safe, code_text, el, frag, num
from ._page import Lead, Section, dl, figure, fmt, fmt_int, note, table, unavailable
from ._svg import STYLES, Chart, clip, fmt_tick, marker, svg_text

__all__ = ["build"]

_CAUSE_WORDS = {
    "reproducible": "the runs repeat bitwise",
    "unseeded-init": "parameters initialised from an unseeded random number generator",
    "data-pipeline": "the data pipeline: other samples, or the same samples in another order",
    "hash-seed": "Python's per-process hash seed decides an iteration order",
    "nondeterministic-kernel": "a kernel that gives other bits from run to run",
    "environment": "the two machines' environments differ",
    "unknown": "no change twinrun tried removed the divergence",
}


def build(doc: dict) -> tuple[Lead, list[Section], dict, list[str]]:
    verdict = str(doc.get("verdict"))
    good = verdict == "reproducible"
    cause = str(doc.get("cause")) + (f" ({doc['detail']})" if doc.get("detail") else "")
    confirmed = bool(doc.get("confirmed"))
    first = f"cause: {cause}" + ("" if good or confirmed else " (not confirmed by an intervention)")
    lead = Lead([first, f"Fix: {doc.get('fix')}", str(doc.get("summary") or "")],
                verdict.replace("-", " ").upper(), "good" if good else "bad")
    evidence = [e for e in doc.get("evidence") or [] if isinstance(e, dict)]
    sections = [
        Section("fix", "The fix", _fix(str(doc.get("fix") or "")),
                "What to change, as doctor wrote it; the code in it, ready to copy."),
        Section("cause", "The cause and its evidence", _cause(doc, evidence),
                "A cause is named only when a change removed the divergence, or when the traces themselves prove it."),
        Section("ledger", "Ledger of experiments", _ledger(evidence),
                "Every experiment doctor ran: what it changed, how many runs, and whether the runs were identical."),
    ]
    if doc.get("portability"):
        sections.append(Section("portability", "Portability", _portability(doc["portability"]),
                                "Runs that repeat here can still give other numbers with another thread count or "
                                "on another CPU; doctor reran the script under each setting it can emulate."))
    if doc.get("environment"):
        sections.append(Section("environment", "Environment differences between the machines",
                                _environment(doc["environment"])))
    sections.append(Section("run", "How doctor ran", dl([
        ("script", el("code", None, str(doc.get("script")))),
        ("steps per run", f"{fmt_int(doc['steps'])} recorded (at most {fmt_int(doc.get('max_steps'))})"
         if doc.get("steps") is not None else f"at most {fmt_int(doc.get('max_steps'))}"),
        ("runs", fmt_int(doc.get("reruns"))),
        ("time", f"{fmt(doc.get('seconds'))} s"),
        ("compared against", str(doc["against"]) if doc.get("against") else "its own runs (one machine)"),
    ])))
    data = {"experiments": [{"name": e.get("name"), "identical": e.get("identical"),
                             "max_ulp": (e.get("first_divergence") or {}).get("max_ulp")} for e in evidence]}
    return lead, sections, data, [str(doc.get("script") or "?")]


# --- fix ------------------------------------------------------------------------------------------
_CODE = re.compile(r"`([^`]+)`")


def snippets(fix: str) -> list[str]:
    """The code a reader would copy from a fix, in order: code spans after the fix's lead-in (doctor
    writes "what: how", and the what names the offending call), that look like code or a setting
    (a call, an assignment, an import or a command), not a bare layer name.

    >>> snippets("Seed `np.random.default_rng()` at a.py:3: pass `seeds.numpy('x')` in `fc1`.")
    ["seeds.numpy('x')"]
    """
    cut = fix.find(": ")
    body = fix[cut + 2:] if cut >= 0 else fix
    seen: list[str] = []
    for s in _CODE.findall(body):
        s = s.strip()
        code_like = any(ch in s for ch in "(=") or s.startswith(("import ", "from ", "twinrun ", "python "))
        if code_like and s not in seen:
            seen.append(s)
    return seen


def _fix(fix: str) -> Safe:
    parts: list[Child] = [el("p", None, code_text(fix))]
    codes = snippets(fix)
    if codes:
        parts.append(el("h3", None, "Code to copy"))
        for i, s in enumerate(codes):
            lines = s.split("; ") if s.startswith(("import ", "from ")) else [s]
            parts.append(el("div", {"class": "snippet"},
                            el("pre", {"id": f"snippet-{i}"}, el("code", None, "\n".join(lines))),
                            el("button", {"type": "button", "aria-label": f"copy snippet {i + 1}"}, "Copy")))
    return frag(parts)


# --- cause ------------------------------------------------------------------------------------------
def _cause(doc: dict, evidence: list[dict]) -> Safe:
    cause = str(doc.get("cause"))
    fd = doc.get("first_divergence") or {}
    baseline = next((e for e in evidence if e.get("name") == "baseline"), None)
    # The experiments that removed the divergence: on one machine, a change whose own two runs were
    # identical; with --against, a change whose run reproduced the other machine's trace.
    own = "its own second run"
    removing = [e for e in evidence if e.get("name") not in ("baseline", "against") and e.get("identical")
                and ((e.get("compared_with") != own) if doc.get("against") else (e.get("compared_with") == own))]
    items: list[tuple[str, Child]] = [
        ("cause", frag(el("strong", None, cause), f" — {_CAUSE_WORDS.get(cause, '')}")),
    ]
    if doc.get("detail"):
        items.append(("detail", code_text(str(doc["detail"]))))
    if fd:
        items.append(("first divergence", frag(f"step {fd.get('step')}, {fd.get('phase')}, ",
                                               el("code", None, str(fd.get("name"))))))
    if doc.get("verdict") != "reproducible":
        order = bool(((baseline or {}).get("first_divergence") or {}).get("input_order_only"))
        if doc.get("confirmed") and removing:
            what = " reproduced the other machine's trace" if doc.get("against") else " made the runs identical"
            items.append(("confirmed by", frag("an intervention: ", _names(removing), what)))
        elif doc.get("confirmed"):
            items.append(("confirmed by", "an intervention (see the ledger)"))
        elif order:
            items.append(("confirmed", ("not by an intervention: the traces prove it (the same samples arrive in "
                                       "another order)")))
        else:
            items.append(("confirmed", "no: no change doctor tried removed the divergence"))
    if baseline is not None and baseline.get("note"):
        items.append(("baseline", code_text(str(baseline["note"]))))
    sites = []
    for e in evidence:
        for a in e.get("acted") or []:
            key = (a.get("name"), a.get("what"), a.get("site"))
            if key not in sites:
                sites.append(key)
    parts: list[Child] = [dl(items)]
    if sites:
        parts.append(el("h3", None, "Where it comes from"))
        parts.append(table([("intervention", "text"), ("what it changed", "text"), ("call site", "text")],
                           [[el("code", None, str(n)), str(w), el("code", None, str(s))] for n, w, s in sites],
                           caption="call sites the interventions acted on"))
    return frag(parts)


def _names(exps: list[dict]) -> Safe:
    return frag([frag(el("code", None, str(e.get("name"))), " (", str(e.get("changed")), ")",
                      ", " if i < len(exps) - 1 else "") for i, e in enumerate(exps)])


# --- ledger -----------------------------------------------------------------------------------------
def _where_text(fd: dict | None) -> str:
    if not fd:
        return "—"
    text = f"step {fd.get('step')}, {fd.get('phase')}, {fd.get('name')}"
    if fd.get("max_ulp") is not None:
        text += f" (up to {fmt_int(fd['max_ulp'])} ULP)"
    elif fd.get("input_order_only"):
        text += " (same samples, other order)"
    return text


def _ident(v: Any) -> tuple[Safe, int]:
    if v is None:
        return el("span", None, "—"), 2
    return (el("span", {"class": "yes"}, "✓ identical"), 0) if v else (el("span", {"class": "no"}, "✗ they part"), 1)


def _ledger(evidence: list[dict]) -> Safe:
    if not evidence:
        return unavailable("The document lists no experiments.")
    rows = []
    for i, e in enumerate(evidence):
        fd = e.get("first_divergence")
        rows.append([i + 1, el("code", None, str(e.get("name"))), str(e.get("changed") or ""),
                     e.get("runs"), str(e.get("compared_with") or ""), _ident(e.get("identical")),
                     (_where_text(fd), "" if not fd else f"{fd.get('step', 0):012d}"),
                     (fmt(e.get("seconds")), e.get("seconds"))])
    parts: list[Child] = [table([("#", "number"), ("experiment", "text"), ("what changed", "text"), ("runs", "number"),
                                 ("compared with", "text"), ("result", "text"), ("where they part", "text"),
                                 ("seconds", "number")],
                                rows, sortable=True, caption="experiments", ident="ledger-table")]
    chart = _ulp_chart(evidence)
    if chart is not None:
        parts.append(chart)
    return frag(parts)


def _ulp_chart(evidence: list[dict]) -> Safe | None:
    """Each experiment's distance at its first divergence (largest ULP, log scale); identical ones at 'identical'."""
    rows = [e for e in evidence if e.get("identical") is not None]
    ulps = [(e.get("first_divergence") or {}).get("max_ulp") for e in rows]
    known = [u for u in ulps if isinstance(u, (int, float)) and u > 0]
    if not known:
        return None
    lab_w = 230
    h = 34 + 24 * len(rows) + 44
    c = Chart("ledger-chart", "How far apart each experiment's runs are at their first divergence",
              "Largest ULP distance at the first divergence, per experiment, on a log scale; identical runs are "
              "drawn at the left edge.", height=h, left=lab_w, top=26)
    hi = 10 ** math.ceil(math.log10(max(known) * 1.01))
    c.scales(0.5, hi, 0, len(rows), xlog=True)
    assert c.x is not None and c.y is not None
    ticks = [(v, fmt_tick(v)) for v in c.x.ticks() if v >= 1]
    c.axes("largest ULP distance at the first divergence (log scale; 1 ULP = adjacent floats)", "",
           xticks=[(0.5, "same")] + ticks, yticks=[], xgrid=True, ygrid=False)
    for i, (e, u) in enumerate(zip(rows, ulps)):
        y = c.y(len(rows) - i - 0.5)
        c.add(svg_text(lab_w - 10, y + 4, clip(str(e.get("name")), lab_w - 20), anchor="end"))
        if e.get("identical"):
            c.add(marker("circle", c.x(0.5), y, STYLES[2][0], 5), svg_text(c.x(0.5) + 10, y + 4, "identical", cls="tl"))
        elif isinstance(u, (int, float)) and u > 0:
            c.add(el("line", {"x1": num(c.x(0.5)), "x2": num(c.x(u)), "y1": num(y), "y2": num(y), "stroke": "#999",
                              "stroke-dasharray": "2 2"}),
                  marker("cross", c.x(u), y, STYLES[1][0], 5),
                  svg_text(c.x(u) + (-10 if c.x(u) > c.width - 90 else 10), y - 7 if c.x(u) > c.width - 90 else y + 4,
                        f"{fmt_int(u)} ULP", anchor="end" if c.x(u) > c.width - 90 else "start", cls="tl"))
        else:
            c.add(svg_text(c.x(0.5) + 10, y + 4, "they part (distance not measured: values not kept)", cls="tl"))
    return figure(c.render(), "Green circles: the runs were identical. Crosses: the runs part, placed at the largest "
                              "ULP distance of their first divergence. A few ULP mean the same computation summed in "
                              "another order; billions mean unrelated values (e.g. another random initialisation).")


# --- portability --------------------------------------------------------------------------------------
def _portability(port: dict) -> Safe:
    parts: list[Child] = []
    rows = []
    tc = port.get("thread-count")
    if isinstance(tc, dict):
        for r in tc.get("runs") or []:
            rows.append(["thread count", el("code", None, str(r.get("setting"))), str(r.get("changed") or ""),
                         _ident(r.get("identical")), _where_text(r.get("first_divergence"))])
        if not tc.get("runs"):
            rows.append(["thread count", "—", str(tc.get("note") or "not tried"), _ident(None), "—"])
    isa = port.get("cpu-isa")
    if isinstance(isa, dict):
        for r in isa.get("runs") or []:
            rows.append(["CPU instruction set", el("code", None, str(r.get("setting"))), str(r.get("changed") or ""),
                         _ident(r.get("identical")), _where_text(r.get("first_divergence"))])
    facts: list[tuple[str, Child]] = []
    if isinstance(tc, dict):
        facts.append(("thread count", f"default {tc.get('default', '?')}, tried {tc.get('tried', '?')}: "
                                      + _stable_word(tc.get("stable"))))
    if isinstance(isa, dict):
        facts.append(("CPU instruction set", f"this CPU: {isa.get('capability', '?')}; frameworks: "
                                             f"{', '.join(map(str, isa.get('frameworks') or [])) or 'none'}; "
                                             + _stable_word(isa.get("stable"))))
    if facts:
        parts.append(dl(facts))
    if rows:
        parts.append(table([("what", "text"), ("setting", "text"), ("what changed", "text"), ("result", "text"),
                            ("where it parts from the baseline", "text")], rows, caption="portability runs"))
    if isinstance(isa, dict):
        if isa.get("note"):
            parts.append(note(str(isa["note"])))
        for w in isa.get("not_emulated") or []:
            parts.append(note("Not emulated: ", str(w)))
    return frag(parts)


def _stable_word(v: Any) -> str:
    return "stable (the same bits)" if v is True else ("not stable (other bits)" if v is False else "not tested")


def _val(v: Any) -> str:
    return "unset" if v is None else str(v)


def _environment(diffs: list[dict]) -> Safe:
    return table([("rank", "text"), ("key", "text"), ("here", "text"), ("there", "text"), ("why it matters", "text")],
                 [[str(d.get("rank") or "?"), el("code", None, str(d.get("key"))), _val(d.get("a")), _val(d.get("b")),
                   str(d.get("why") or "")] for d in diffs], sortable=True, caption="environment differences")
