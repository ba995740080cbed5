"""When the runs repeat here: would another thread count, or an older CPU, give other numbers?

Each framework the script used says which reruns can show it (``Adapter.thread_variant``,
``Adapter.isa_variants``: only instruction sets below this CPU's, since a higher one dies of SIGILL);
each rerun is compared with the baseline, and the fix says what to pin for the same numbers elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import frameworks
from ..cpu import cpu_flags, isa_level
from .experiments import ExperimentRunner, Plan, frameworks_of
from .model import Cause, Diagnosis, Experiment, Verdict, Where, where_words

__all__ = ["CHECKS", "isa_plans", "reproducible"]

CHECKS = ("thread-count", "cpu-isa")
_EMULABLE = {"torch", "tensorflow", "keras", "jax"}


def isa_plans(fws: Sequence[str]) -> tuple[list[Plan], list[str]]:
    """The lower-instruction-set reruns for the frameworks ``fws`` on this CPU, and why others cannot be."""
    variants, why_not = frameworks.isa_variants(fws, cpu_flags(), os.environ)
    if not set(fws) & _EMULABLE:
        why_not.append("the script uses none of PyTorch, TensorFlow, JAX, whose kernels can be emulated at a "
                       "lower instruction set")
    return [Plan.of(v) for v in variants], why_not


def _thread_plan(fws: Sequence[str], nproc: int | None = None) -> tuple[Plan | None, dict[str, Any]]:
    """One rerun with another thread count, for the frameworks the script uses (and what it is); under
    ``--nproc`` the count per rank, which torchrun sets to 1 unless the user has set it."""
    if nproc is not None:
        from .ranks import rank_threads

        default = rank_threads()
    else:
        default = frameworks.default_threads(fws)
    other = 1 if default > 1 else 2
    info: dict[str, Any] = {"default": default, "tried": other}
    variant, notes = frameworks.thread_variant(fws, other)
    if notes:
        info["note"] = "; ".join(notes)
    if variant is None:
        return None, info
    names = variant.name.split("+")
    return Plan.of(variant, f"{other} thread{'s' if other > 1 else ''} instead of the default {default} "
                            f"({', '.join(names)})"), info


def _row(e: Experiment, plan: Plan) -> dict[str, Any]:
    return {"setting": e.name, "changed": e.changed, "cause": plan.cause, "identical": e.identical,
            "first_divergence": None if e.first_divergence is None else e.first_divergence.short(),
            "advice": plan.advice or None}


def _portability(runner: ExperimentRunner, reference: str, checks: Sequence[str], evidence: list[Experiment],
                 fws: Sequence[str]) -> dict[str, Any]:
    plans: list[Plan] = []
    out: dict[str, Any] = {}
    thread_plan = None
    nproc = runner.options.nproc
    if "thread-count" in checks:
        thread_plan, info = _thread_plan(fws, nproc)
        out["thread-count"] = info
        if thread_plan is not None:
            plans.append(thread_plan)
    isa: list[Plan] = []
    why_not: list[str] = []
    if "cpu-isa" in checks:
        isa, why_not = isa_plans(fws)
    plans += isa
    bucket = None
    if nproc is not None and "torch" in fws:
        from .ranks import bucket_plan

        bucket, out["ddp-buckets"] = bucket_plan(nproc)
        if bucket is not None:
            plans.append(bucket)
    exps = runner.singles(plans, reference, "the baseline") if plans else []
    evidence.extend(exps)
    by = {e.name: e for e in exps}
    if "thread-count" in checks:
        if thread_plan is None:
            out["thread-count"].update({"stable": None, "runs": []})
        else:
            e = by[thread_plan.name]
            out["thread-count"].update({"stable": e.identical, "runs": [_row(e, thread_plan)]})
    if bucket is not None:
        e = by[bucket.name]
        out["ddp-buckets"].update({"stable": e.identical, "runs": [_row(e, bucket)]})
    if "cpu-isa" in checks:
        rows = [_row(by[p.name], p) for p in isa]
        out["cpu-isa"] = {
            "capability": _capability(fws),
            "frameworks": sorted(set(fws) & _EMULABLE),
            "stable": (all(r["identical"] for r in rows) if rows else None),
            "runs": rows,
            "not_emulated": why_not,
            "note": (None if rows else "no lower CPU instruction set can be emulated on this machine: "
                     + "; ".join(why_not)),
        }
    return out


def _capability(fws: Sequence[str]) -> str | None:
    """The instruction-set level this machine runs: PyTorch's own word for it when the script uses PyTorch."""
    if "torch" in fws:
        from ..frameworks.torch.portability import probe

        cap = probe().get("capability")
        if cap:
            return str(cap)
    return isa_level(cpu_flags())


def reproducible(runner: ExperimentRunner, script: Path, baseline: Experiment, checks: Sequence[str]) -> Diagnosis:
    """The baseline repeats: the portability reruns, and what to pin for the same numbers elsewhere."""
    evidence = [baseline]
    fws = frameworks_of(baseline.traces[0])
    port = _portability(runner, baseline.traces[0], checks, evidence, fws) if checks else None
    fix = "Nothing to fix: the runs repeat bitwise on this machine."
    summary = f"The runs are reproducible: {runner.max_steps} steps repeat bitwise."
    if port:
        words = frameworks.words(fws)
        tc, isa = port.get("thread-count"), port.get("cpu-isa")
        if tc and tc.get("stable") is False:
            part = tc["runs"][0]
            fix += (f" Another thread count gives other numbers ({part['setting']} parts "
                    f"{_where(part['first_divergence'])}): for the same numbers on a machine with another core "
                    f"count, pin it with `twinrun.deterministic(threads=N)` (or "
                    f"{words.pin_threads.format(n='N', m='N-1')}), the same N everywhere.")
        if isa and isa.get("stable") is False:
            parting = [r for r in isa["runs"] if r["identical"] is False]
            isa_parts = [r["setting"] for r in parting if r["cause"] == "cpu-isa"]
            if isa_parts:
                fix += (f" Another CPU instruction set gives other numbers ({', '.join(isa_parts)}): a machine with "
                        "another CPU will not repeat these numbers bitwise unless it runs the same kernels — set the "
                        "lowest level both CPUs share (e.g. `" + isa_parts[-1] + "`) on both.")
            for r in parting:
                if r["cause"] != "cpu-isa" and r["advice"]:
                    fix += " " + r["advice"]
        buckets = port.get("ddp-buckets")
        if buckets and buckets.get("stable") is False:
            part = buckets["runs"][0]
            fix += (f" Another DDP bucket layout gives other numbers ({part['setting']} parts "
                    f"{_where(part['first_divergence'])}). " + (part["advice"] or ""))
        summary += " " + _portability_words(port)
    return Diagnosis(str(script), Verdict.REPRODUCIBLE, Cause.REPRODUCIBLE, None, None, fix, evidence, port, True,
                     summary)


def _where(short: dict[str, Any] | None) -> str:
    """A portability row's first divergence (its short form) in words."""
    return where_words(Where(**short) if short else None)


def _portability_words(port: dict[str, Any]) -> str:
    out = []
    tc, isa = port.get("thread-count"), port.get("cpu-isa")
    buckets = port.get("ddp-buckets")
    if buckets:
        if not buckets.get("runs"):
            out.append(f"DDP buckets: {buckets.get('note')}.")
        else:
            out.append("DDP buckets: " + ("stable." if buckets["stable"] else
                                           f"not stable, {buckets['runs'][0]['setting']} parts "
                                           f"{_where(buckets['runs'][0]['first_divergence'])}."))
    if tc:
        if tc.get("stable") is None:
            out.append(f"Thread count: {tc.get('note')}")
        else:
            out.append("Thread count: " + ("stable." if tc["stable"] else
                                           f"not stable, {tc['runs'][0]['setting']} parts "
                                           f"{_where(tc['runs'][0]['first_divergence'])}."))
    if isa:
        if not isa["runs"]:
            out.append(f"CPU ISA: {isa['note']}")
        else:
            bad = [r for r in isa["runs"] if r["identical"] is False]
            out.append("CPU ISA: " + ("stable under " + ", ".join(r["setting"] for r in isa["runs"]) + "." if not bad
                                      else "not stable: " + "; ".join(
                                          f"{r['setting']} parts {_where(r['first_divergence'])}" for r in bad) + "."))
    return " ".join(out)
