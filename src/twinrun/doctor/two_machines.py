"""``doctor --against OTHER.trace``: this machine's runs against a trace made on another machine.

If the runs here do not even repeat, that comes first (the usual attribution). If they repeat but
differ from the other machine's, the environments differ: their ranked environment diff says how,
and reruns that emulate the other machine (its lower instruction set, its thread count: the
frameworks' ``emulations``) confirm it when one reproduces the other trace bitwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import frameworks
from .._errors import StructuralMismatchError, UsageError
from ..comparison import diff
from ..env import EnvDiff
from ..runner import open_reference
from .attribution import attribute
from .experiments import ExperimentRunner, Plan
from .model import Cause, Diagnosis, Experiment, Verdict, where_words

__all__ = ["Reference", "open_against", "two_machines"]


class Reference:
    """What doctor needs of the other machine's trace: its header and how many steps it recorded."""

    def __init__(self, path: str, header: dict[str, Any], steps: int, status: str):
        self.path, self.header, self.steps, self.status = path, header, steps, status


def open_against(against: str) -> Reference:
    """Read the reference trace once, up front (a one-line error when it is missing, bad or empty)."""
    with open_reference(against) as t:   # BadTraceError (exit 2) when missing or not a trace
        if not t.steps():
            raise UsageError(f"--against trace {str(against)!r} has no recorded step; record one with "
                             "'twinrun run -o FILE script.py'")
        return Reference(str(against), t.header, len(t.steps()), t.status)


def _ranked(env_diff: EnvDiff | None) -> list[dict[str, Any]]:
    if env_diff is None:
        return []
    order = {"numerics": 0, "possible": 1, "none": 3}
    rows = [d.to_dict() for d in env_diff.differences if d.rank != "none"]
    return sorted(rows, key=lambda d: order.get(d.get("rank") or "", 2))


def two_machines(runner: ExperimentRunner, script: Path, ref: Reference) -> Diagnosis:
    against = ref.path
    runner.options = runner.options.replace(max_steps=min(runner.max_steps, ref.steps))
    here = runner.pairs([Plan("baseline", "nothing: two runs here as you run the script")])[0]
    live = Experiment("against", f"this machine's run against {Path(against).name}", runs=0,
                      traces=[here.traces[0]], compared_with=Path(against).name)
    c = diff(here.traces[0], against)
    if c.different_models:
        raise StructuralMismatchError(
            f"{script.name} does not record the same model as {against}: {c.structural[0].text()}; "
            "give --against a trace of this script")
    live.fill(c)
    if not here.identical:   # not even this machine repeats: that comes first
        d = attribute(runner, script, here)
        d.evidence.append(live)
        d.against = against
        return d
    evidence = [here, live]
    diffs = _ranked(c.env_diff)
    if live.identical:
        return Diagnosis(str(script), Verdict.REPRODUCIBLE, Cause.REPRODUCIBLE, None, None,
                         "Nothing to fix: this machine repeats the other machine's trace bitwise.", evidence, None,
                         True, f"This machine reproduces {Path(against).name} bitwise ({c.steps_compared} steps).",
                         against=against, environment=diffs)
    other_env = ref.header.get("env") or {}
    plans = [Plan.of(v) for name in frameworks.NAMES for v in frameworks.adapter_class(name).emulations(other_env)]
    confirmed_by = None
    if plans:
        exps = runner.singles(plans, against, Path(against).name)
        evidence.extend(exps)
        confirmed_by = next((e for e in exps if e.identical), None)
    fd = live.first_divergence
    top = ", ".join(f"{d['key']} ({d['a']} here vs {d['b']} there)" for d in diffs[:3]) or "none recorded"
    if confirmed_by is not None:
        plan = next(p for p in plans if p.name == confirmed_by.name)
        fix = (f"To get the other machine's numbers here, run with {confirmed_by.name.replace('+', ' and ')} "
               f"(`{plan.shell()} twinrun run ...`); to make both machines agree, set it on both.")
        summary = (f"This machine and the other part {where_words(fd)}; emulating the other machine "
                   f"({confirmed_by.changed}) reproduces its trace bitwise, so the environment difference is the "
                   "cause.")
    else:
        fix = ("The machines differ in " + top + "; make the numerics-relevant ones equal (same library versions, "
               "same thread count, the lowest CPU instruction set both share).")
        tried = ", ".join(p.name for p in plans) if plans else "nothing could be emulated here"
        summary = (f"This machine and the other part {where_words(fd)}; the runs here repeat, so the environment "
                   f"explains it (ranked differences: {top}); emulating it here did not reproduce the other trace "
                   f"(tried: {tried}).")
    return Diagnosis(str(script), Verdict.NOT_REPRODUCIBLE, Cause.ENVIRONMENT, None, fd, fix, evidence, None,
                     confirmed_by is not None, summary, against=against, environment=diffs)
