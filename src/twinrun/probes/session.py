"""``twinrun probe SCRIPT``: an unchanged inference script probed in fresh processes.

1. The script runs once in a child (``child.py``) that records the root model's no-grad forward
   calls through the framework adapter and runs ``repeat`` and ``batch_invariance`` on each call as
   it is made, writing each call's inputs, outputs and submodules' outputs to an ``.npz`` file.
2. ``threads``: the script again in a fresh process with 1 thread (2 when the default is 1);
   ``isa``: once per lower instruction set the adapters can hold the framework to on this CPU
   (``frameworks.isa_variants``, never above the CPU's own). Each call is compared with the first
   run's, bit for bit, row by row, first layer named (``bits.py``). Calls are matched by their order;
   when a call's inputs or the model's parameters differ between the processes (unseeded random
   inputs, or weights initialised from an RNG the instruction set changes) the check says it cannot
   tell rather than reporting the difference as the model's.

``probe_script`` returns a ``ScriptProbe`` whose ``to_dict()`` is the ``--json`` document.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import frameworks
from .._errors import EXIT_BAD_INPUT, ScriptFailedError, UsageError
from ..frameworks.base import Variant
from ..options import RunOptions
from .bits import Recording, load_outputs
from .checks import CHECKS, CheckResult, verdict
from .child import IN_CHILD

__all__ = ["ProbeScriptFailed", "ScriptProbe", "probe_script"]

NOT_RUN = "not run (--checks)"


class ProbeScriptFailed(ScriptFailedError):
    """The script failed in one of the probe's processes; ``stderr`` is what it printed."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


@dataclass
class ScriptProbe:
    """What ``twinrun probe SCRIPT`` found: one verdict per check (the worst call's), every call's."""

    script: str
    args: list[str]
    checks: dict[str, CheckResult]
    asked: tuple[str, ...]
    calls: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        """Every check asked for gives the same bits (a check that could not tell is not stable)."""
        return all(self.checks[c].stable is True for c in self.asked)

    def sentence(self) -> str:
        differ = [c for c in self.asked if self.checks[c].stable is False]
        unknown = [c for c in self.asked if self.checks[c].stable is None]
        calls = f"{len(self.calls)} call{'s' if len(self.calls) != 1 else ''} of {self.calls[0]['label']}" \
            if self.calls else "no call"
        if not differ and not unknown:
            return f"Same bits in every check ({', '.join(self.asked)}; {calls})."
        parts = []
        for c in differ:
            r = self.checks[c]
            where = f"first layer {r.first_layer}" if r.first_layer else "no layer named"
            ulp = "a NaN on one side" if r.max_ulp is None else f"{r.max_ulp:,} ULP"
            parts.append(f"{c} ({where}, {ulp} at the output, {r.setting})")
        head = f"{len(differ)} of {len(self.asked)} checks give other bits: {'; '.join(parts)}." if differ else ""
        tail = f" Could not tell: {', '.join(unknown)}." if unknown else ""
        return (head + tail).strip() + f" ({calls})"

    def to_dict(self) -> dict[str, Any]:
        first = self.calls[0] if self.calls else {}
        return {"checks": {c: self.checks[c].to_dict() for c in CHECKS}, "stable": self.stable,
                "sentence": self.sentence(), "script": self.script, "args": self.args, "calls": len(self.calls),
                "batch": first.get("rows"), "model": first.get("label"), "per_call": self.calls,
                "skipped": self.skipped, "runs": self.runs}


def probe_script(options: RunOptions, checks: Sequence[str] = CHECKS, *, max_calls: int = 8,
                 timeout: float | None = None, progress: Callable[[str], None] = lambda _m: None) -> ScriptProbe:
    """Probe the script of ``options`` (its args and ``seed``; nothing else of them is used)."""
    from ..cpu import cpu_flags

    asked = tuple(dict.fromkeys(checks))
    folder = Path(tempfile.mkdtemp(prefix="twinrun-probe-"))
    try:
        name = Path(options.script).name
        progress(f"twinrun probe: running {name} and probing its model calls ...")
        first = _run(options, folder / "default", [c for c in asked if c in IN_CHILD], max_calls, None, {}, timeout)
        calls = sorted(({k: v for k, v in c.items() if k != "kind"} for c in first.calls), key=lambda c: c["index"])
        result = ScriptProbe(options.script, list(options.args), {c: CheckResult(stable=None, note=NOT_RUN)
                                                                   for c in CHECKS}, asked, skipped=first.skipped)
        result.runs.append(first.info("default"))
        if not calls:
            raise UsageError(_no_call_message(name, first.frameworks))
        for c in IN_CHILD:
            if c in asked:
                result.checks[c] = _worst([CheckResult(**_fields(call["checks"][c])) for call in calls],
                                          [call["index"] for call in calls])
        threads = calls[0].get("threads")
        if "threads" in asked:
            other = 1 if not isinstance(threads, int) or threads > 1 else 2
            progress(f"twinrun probe: again with {other} thread{'s' if other > 1 else ''} (default {threads}) ...")
            run = _run(options, folder / "threads", [], max_calls, other, {}, timeout)
            result.runs.append(run.info(f"threads-{other}"))
            setting = f"{other} thread{'s' if other > 1 else ''} against {threads}"
            result.checks["threads"] = _compare_runs(first, run, setting, calls, "threads")
        if "isa" in asked:
            variants, why_not = frameworks.isa_variants(first.frameworks or ["torch"], cpu_flags(), os.environ)
            result.checks["isa"] = _isa(options, folder, first, calls, variants, why_not, max_calls, timeout,
                                        progress, result.runs)
        for call in calls:
            call["checks"] = {c: call["checks"].get(c) for c in asked if c in call["checks"]}
        result.calls = calls
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- one fresh process ----------------------------------------------------------------------------

@dataclass
class _Run:
    folder: Path
    exit_code: int
    seconds: float
    calls: list[dict[str, Any]]
    frameworks: list[str]
    skipped: list[str]
    env: dict[str, str]
    threads: int | None

    def recording(self, index: int) -> Recording | None:
        path = self.folder / f"call-{index}.npz"
        return load_outputs(str(path)) if path.exists() else None

    def info(self, name: str) -> dict[str, Any]:
        return {"name": name, "exit_code": self.exit_code, "seconds": round(self.seconds, 3),
                "calls": len(self.calls), "env": self.env, "threads": self.threads}


def _run(options: RunOptions, folder: Path, checks: list[str], max_calls: int, threads: int | None,
         env: dict[str, str], timeout: float | None) -> _Run:
    from ..runner import launch_module

    argv = ["twinrun.probes.child", "--out", str(folder), "--checks", ",".join(checks), "--max-calls", str(max_calls)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    done, reports = launch_module([*argv, "--", *options.to_argv()], env=env, timeout=timeout,
                                  cwd=None)
    setting = ", ".join(f"{k}={v}" for k, v in env.items()) or (f"{threads} threads" if threads else "default")
    if done.timed_out:
        raise ProbeScriptFailed(f"the script timed out after {timeout} s (run: {setting})", done.stderr)
    if done.returncode == EXIT_BAD_INPUT:
        line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "bad input"
        raise UsageError(line.removeprefix("twinrun probe: error: "))
    if done.returncode != 0:
        why = f"exit code {done.returncode}" if done.returncode > 0 else f"killed by signal {-done.returncode}"
        raise ProbeScriptFailed(f"the script failed ({why}) in the probe's run ({setting})", done.stderr)
    calls = [r for r in reports if r.get("kind") == "probe-call"]
    end = next((r for r in reports if r.get("kind") == "probe-done"), {})
    return _Run(folder, done.returncode, done.seconds, calls, list(end.get("frameworks") or []),
                list(end.get("skipped") or []), dict(env), threads)


def _no_call_message(name: str, used: list[str]) -> str:
    if "torch" not in used:
        others = [f for f in used if f in ("keras", "tensorflow", "jax")]
        if others:
            return (f"{name} uses {', '.join(others)}, not PyTorch: twinrun probe SCRIPT records PyTorch models; "
                    "probe a Keras model or a JAX function with twinrun.probe(fn, batch) in Python")
        return f"{name} made no PyTorch model call; give an inference script that calls a torch.nn.Module"
    return (f"{name} made no forward call of a model without gradients; run the inference under "
            "torch.no_grad() or torch.inference_mode() (calls with gradients are training, for twinrun check)")


# --- comparing processes ----------------------------------------------------------------------------

def _fields(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("stable", "max_ulp", "first_layer", "rows_differing", "note", "ulp_per_row", "setting", "details")
    out = {k: d.get(k) for k in keys}
    out["details"] = out["details"] or {}
    if out["ulp_per_row"] is not None:
        out["ulp_per_row"] = [float(v) for v in out["ulp_per_row"]]
    return out


def _worst(results: list[CheckResult], indices: list[int], extra: dict[str, Any] | None = None) -> CheckResult:
    """One verdict for a check over all calls: the worst call's, with every call's in ``details``."""
    worst: CheckResult | None = None
    at = 0
    for i, r in zip(indices, results):
        if r.worse_than(worst):
            worst, at = r, i
    assert worst is not None
    details: dict[str, Any] = dict(worst.details)
    if len(results) > 1:
        details["call"] = at
        details["calls"] = [{"call": i, "stable": r.stable, "max_ulp": r.max_ulp, "first_layer": r.first_layer}
                            for i, r in zip(indices, results)]
    details.update(extra or {})
    return CheckResult(stable=worst.stable, max_ulp=worst.max_ulp, first_layer=worst.first_layer,
                       rows_differing=worst.rows_differing, note=worst.note, ulp_per_row=worst.ulp_per_row,
                       setting=worst.setting, details=details)


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(x.values.shape == y.values.shape and np.array_equal(x.values, y.values)
                                    for x, y in zip(a, b))


def _compare_call(first: _Run, other: _Run, index: int, setting: str) -> CheckResult:
    ref, out = first.recording(index), other.recording(index)
    if ref is None or out is None:
        return CheckResult(stable=None, setting=setting,
                           note=f"the run with {setting} made {len(other.calls)} model call(s), the first run "
                                f"{len(first.calls)}: the calls cannot be matched")
    if ref.meta.get("label") != out.meta.get("label"):
        return CheckResult(stable=None, setting=setting,
                           note=f"call {index} is a call of {out.meta.get('label')} with {setting}, of "
                                f"{ref.meta.get('label')} in the first run: the calls cannot be matched")
    differ = [what for what, same in (("inputs", _same(ref.inputs, out.inputs)),
                                      ("parameters", ref.meta.get("state") == out.meta.get("state"))) if not same]
    if differ:
        return CheckResult(stable=None, setting=setting,
                           note=f"the model's {' and '.join(differ)} differ with {setting}, so its outputs say nothing "
                                "about the setting: drawn without a seed (run twinrun probe --seed 0), or drawn by "
                                "random kernels the setting itself changes (load the weights and inputs from files)")
    if not _same_shapes(ref, out):
        return CheckResult(stable=None, setting=setting, note=f"call {index} returns other shapes with {setting}")
    return verdict(ref.outputs, out.outputs, ref.layers, out.layers,
                   layers_note=None if ref.layers else "the model has no submodules to name", setting=setting)


def _same_shapes(a: Recording, b: Recording) -> bool:
    return len(a.outputs) == len(b.outputs) and all(
        x.values.shape == y.values.shape and x.kind == y.kind and x.values.dtype == y.values.dtype
        for x, y in zip(a.outputs, b.outputs))


def _compare_runs(first: _Run, other: _Run, setting: str, calls: list[dict[str, Any]], check: str) -> CheckResult:
    indices = [c["index"] for c in calls]
    results = [_compare_call(first, other, i, setting) for i in indices]
    for call, r in zip(calls, results):
        call["checks"][check] = r.to_dict()
    return _worst(results, indices)


def _pick(results: list[CheckResult]) -> CheckResult:
    worst: CheckResult | None = None
    for r in results:
        if r.worse_than(worst):
            worst = r
    assert worst is not None
    return worst


def _isa(options: RunOptions, folder: Path, first: _Run, calls: list[dict[str, Any]], variants: list[Variant],
         why_not: list[str], max_calls: int, timeout: float | None, progress: Callable[[str], None],
         runs: list[dict[str, Any]]) -> CheckResult:
    if not variants:
        return CheckResult(stable=None, note="no lower instruction set to try on this CPU: " + "; ".join(why_not))
    indices = [c["index"] for c in calls]
    per_variant: dict[str, Any] = {}
    per_call: dict[int, list[CheckResult]] = {i: [] for i in indices}
    for k, v in enumerate(variants, 1):
        progress(f"twinrun probe: instruction set {k}/{len(variants)}: {v.name} ...")
        run = _run(options, folder / f"isa-{k}", [], max_calls, None, dict(v.env), timeout)
        runs.append(run.info(v.name))
        results = [_compare_call(first, run, i, v.name) for i in indices]
        for i, r in zip(indices, results):
            per_call[i].append(r)
        w = _pick(results)
        per_variant[v.name] = {"stable": w.stable, "max_ulp": w.max_ulp, "first_layer": w.first_layer,
                               "note": w.note, "description": v.note}
    worst_per_call = [_pick(per_call[i]) for i in indices]
    for call, r in zip(calls, worst_per_call):
        call["checks"]["isa"] = r.to_dict()
    return _worst(worst_per_call, indices, {"variants": per_variant, "not_tried": why_not})
