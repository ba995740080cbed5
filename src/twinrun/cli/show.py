"""``twinrun show TRACE``: what a trace holds — its run, its status, and per step the events of each phase.

The first thing to look at when a check surprises: how many steps were recorded (none, when the
script has no step twinrun recognises), whether the run ended, was stopped or was cut off, and which
phases each step holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._format import fmt_count
from ._output import console, emit_json

__all__ = ["register", "summary"]

# How the trace's stored status reads to a person: "running" in a file means the run was killed.
_STATUS = {"complete": "complete", "stopped": "stopped", "diverged": "diverged", "failed": "failed",
           "running": "cut-off"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("show", parents=[common], help="what a trace holds: its run, status and events per step",
                       description="Show a trace's header, its status (complete, stopped, diverged, failed, "
                                   "cut-off) and, per step, the number of events of each phase.")
    p.add_argument("trace", metavar="TRACE", help="a trace written by `twinrun run` or twinrun.record()")
    p.set_defaults(func=run)


def summary(path: str | Path) -> dict[str, Any]:
    """The plain data ``twinrun show --json`` prints."""
    from ..comparison import captured_phases
    from ..trace import PHASES, Trace

    with Trace.open(path) as t:
        t.check()   # every event and value read once: a corrupt trace is one line, never shown as "complete"
        counts = t.event_counts()
        header = t.header
        seeds = header.get("seeds") if isinstance(header.get("seeds"), dict) else None
        env = header.get("env")
        env = env if isinstance(env, dict) else {}
        host = env.get("host")
        host = host if isinstance(host, dict) else {}
        recorder = t.meta("recorder") or {}
        frameworks = t.meta("frameworks")
        per_step = [{"step": s, "events": {p: c[p] for p in PHASES if p in c}} for s, c in sorted(counts.items())]
        return {
            "trace": str(path),
            "status": _STATUS.get(t.status, t.status),
            "steps": len(counts),
            "events": sum(sum(c.values()) for c in counts.values()),
            "per_step": per_step,
            "script": _text(header.get("script")),
            "script_args": _texts(header.get("script_args")),
            "created": _text(header.get("created")),
            "twinrun": _text(header.get("twinrun")),
            "frameworks": _texts(frameworks),
            "capture": captured_phases(t),
            "max_steps": recorder.get("max_steps") if isinstance(recorder, dict) else None,
            "seed": None if seeds is None else seeds.get("root"),
            "python": _text(header.get("python")),
            "host": _text(host.get("hostname")),
            "divergence": t.meta("divergence"),
            "seen": t.meta("seen") if isinstance(t.meta("seen"), dict) else None,
            "notes": t.meta("notes") or [],
        }


def _text(v: Any) -> str | None:
    """A header value that should be text (a file from elsewhere may hold anything there)."""
    return v if isinstance(v, str) else None


def _texts(v: Any) -> list[str] | None:
    return [str(x) for x in v] if isinstance(v, list) else None


def run(args: argparse.Namespace) -> int:
    doc = summary(args.trace)
    if args.json:
        emit_json(doc)
        return 0
    from rich.table import Table
    from rich.text import Text

    from .._display import shown

    out = console()
    steps = doc["steps"]
    lead = (f"{shown(doc['trace'])}: {fmt_count(steps)} step{'s' if steps != 1 else ''} recorded, "
            f"{fmt_count(doc['events'])} events, {doc['status']}")
    out.print(Text(lead, style="bold"))
    if doc["status"] == "cut-off":
        out.print(Text("the run ended without closing its trace (killed or crashed): it holds the steps committed "
                       "before that", style="dim"))
    if steps == 0 and doc["status"] != "cut-off":
        from ..recording import no_step_reason

        out.print(Text(no_step_reason(doc["seen"] or {})))
    for note in doc["notes"]:
        out.print(Text(f"note: {note}", style="dim"))
    facts = [("script", doc["script"]), ("arguments", " ".join(map(str, doc["script_args"] or [])) or None),
             ("frameworks", ", ".join(doc["frameworks"] or []) or None), ("seed", doc["seed"]),
             ("captured", ", ".join(doc["capture"]) if doc["capture"] and len(doc["capture"]) < 8 else "every phase"),
             ("max steps", doc["max_steps"]), ("created", doc["created"]), ("twinrun", doc["twinrun"])]
    for k, v in facts:
        if v is not None:
            out.print(Text(f"  {k}: {shown(v, 1000)}"))   # from the trace's header: escaped
    if doc["per_step"]:
        phases = [p for p in ("init", "input", "forward", "loss", "grad", "param", "metric", "custom")
                  if any(p in s["events"] for s in doc["per_step"])]
        t = Table(title="events per step", title_justify="left")
        t.add_column("step", justify="right")
        for p in phases:
            t.add_column(p, justify="right")
        rows = doc["per_step"]
        rows_shown = rows if len(rows) <= 12 else [*rows[:6], None, *rows[-5:]]
        for row in rows_shown:
            if row is None:
                t.add_row("...", *[""] * len(phases))
                continue
            t.add_row(str(row["step"]), *(str(row["events"].get(p, "")) for p in phases))
        out.print(t)
    return 0
