"""Doctor's census pass: one more run of the script that names the nondeterministic ops it used.

When deterministic kernels remove a divergence, the phase alone says only "a backward accumulation";
the census says which op: the script runs once more in a fresh process (the same ``RunOptions`` as
doctor's other runs, a few steps, recorded as usual) with the framework's census installed, which
counts every use of an op known to part run to run on this device, with the user's call site, the
pass it ran in (forward, backward, optimizer) and how often. The ops and their facts (why they part,
what the deterministic alternative costs, measured) belong to the framework
(``frameworks/torch/census.py``); this module is framework-neutral: it launches the run, reads the
report, and words the diagnosis.

    python -m twinrun.doctor.census -- <twinrun run arguments>     # the child

>>> c = census(RunOptions.create("train.py", max_steps=2))          # doctest: +SKIP
>>> c.ops[0].label, c.ops[0].site
('index_put_ (accumulate=True)', 'train.py:31')
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _channel, frameworks
from .._errors import EXIT_BAD_INPUT, TwinrunError
from .._format import fmt_count
from ..options import RunOptions
from .experiments import ExperimentRunner
from .model import Act, Cause, Diagnosis, Experiment, Verdict, where_words

__all__ = ["CENSUS", "OpCensus", "OpUse", "census", "explain_kernel", "main"]

# The frameworks that have a census, and the module that installs it (``install() -> finish``).
CENSUS = {"torch": "twinrun.frameworks.torch.census"}
REPORT_KIND = "census"
# A trace phase (where two runs first part) and the pass of the census that can explain it.
_PASS = {"forward": "forward", "loss": "forward", "grad": "backward", "param": "optimizer"}
_PASS_WORDS = {"forward": "forward pass", "backward": "backward pass", "optimizer": "optimizer step",
               "unknown": "pass not known"}


@dataclass(frozen=True)
class OpUse:
    """One op used at one call site in one pass: how often, and what is known of it."""

    op: str                    # "index_put_ (accumulate=True)"
    label: str                 # with the forward call a backward op comes from: "..., backward of x[idx]"
    phase: str                 # forward, backward, optimizer (unknown: a framework warning without a pass)
    site: str                  # file:line in the user's code ("" when no frame of it was on the stack)
    count: int
    first_step: int | None
    backward_of: str | None = None
    fact: dict[str, Any] = field(default_factory=dict)
    rewrite: dict[str, str] | None = None   # the call on the user's line and its replacement (before, after)

    @classmethod
    def of(cls, row: dict[str, Any]) -> OpUse:
        rewrite = row.get("rewrite")
        return cls(str(row["op"]), str(row.get("label") or row["op"]), str(row.get("phase") or "unknown"),
                   str(row.get("site") or ""), int(row.get("count") or 0),
                   None if row.get("first_step") is None else int(row["first_step"]),
                   None if row.get("backward_of") is None else str(row["backward_of"]),
                   dict(row.get("fact") or {}),
                   {str(k): str(v) for k, v in rewrite.items()} if isinstance(rewrite, dict) else None)

    @property
    def detail(self) -> str:
        """``index_put_ (accumulate=True), forward`` (the op, and the pass it runs in)."""
        return self.label if self.phase == "backward" else f"{self.label}, {self.phase}"

    def where(self) -> str:
        return f"at {self.site}" if self.site else "(no call site of your code on the stack)"

    def counted(self, steps: int) -> str:
        """``forward pass, 2 calls in 2 steps``."""
        calls = f"{fmt_count(self.count)} call{'s' if self.count != 1 else ''}"
        return (f"{_PASS_WORDS.get(self.phase, self.phase)}, {calls} in {fmt_count(steps)} "
                f"step{'s' if steps != 1 else ''}")

    def words(self, steps: int) -> str:
        return f"`{self.label}` {self.where()} ({self.counted(steps)})"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "label": self.label, "phase": self.phase, "site": self.site, "count": self.count,
                "first_step": self.first_step, "backward_of": self.backward_of, "fact": dict(self.fact),
                "rewrite": self.rewrite}


@dataclass
class OpCensus:
    """What the census run found: the ops (most used first), the steps it ran, and what it could not see."""

    framework: str
    ops: list[OpUse]
    steps: int
    seconds: float = 0.0
    note: str | None = None

    def primary(self, trace_phase: str | None) -> OpUse | None:
        """The op that explains a divergence first seen in ``trace_phase``: one in the matching pass,
        else the most used."""
        wanted = _PASS.get(str(trace_phase))
        same = [u for u in self.ops if u.phase == wanted]
        return (same or self.ops)[0] if self.ops else None

    def sentence(self) -> str:
        if not self.framework:
            return f"The census could not tell: {self.note or 'its run reported nothing'}."
        if not self.ops:
            return (f"No op known to part run to run on this CPU ran in {fmt_count(self.steps)} "
                    f"step{'s' if self.steps != 1 else ''} of {self.framework}.")
        return "Ops that part run to run: " + "; ".join(u.words(self.steps) for u in self.ops) + "."

    def to_dict(self) -> dict[str, Any]:
        return {"framework": self.framework, "ops": [u.to_dict() for u in self.ops], "steps": self.steps,
                "seconds": round(self.seconds, 2), "note": self.note, "sentence": self.sentence()}


def census(options: RunOptions, *, workdir: str | None = None, timeout: float | None = None,
           env: dict[str, str] | None = None) -> OpCensus | None:
    """Run the script of ``options`` once more with the census installed; None when the script used
    no framework that has a census (or the run reported nothing: it could not tell)."""
    from ..runner import launch_module

    folder = workdir or tempfile.mkdtemp(prefix="twinrun-census-")
    opts = options.replace(output=os.path.join(folder, "census.trace"), against=None)
    t0 = time.perf_counter()
    try:
        done, reports = launch_module(["twinrun.doctor.census", "--", *opts.to_argv()], env=env, timeout=timeout)
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    ours = [r for r in reports if r.get("kind") == REPORT_KIND]
    if not ours:   # the child died before it could report: say so, never "no op found"
        lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()]
        why = "killed after the time limit" if done.timed_out else (lines[-1].strip() if lines else
                                                                    f"exit code {done.returncode}")
        return OpCensus("", [], 0, time.perf_counter() - t0, f"the census run reported nothing ({why[:300]})")
    found = [r for r in ours if r.get("framework")]
    if not found:
        return None
    r = found[-1]
    ops = sorted((OpUse.of(row) for row in r.get("ops") or []), key=lambda u: -u.count)
    note = None if r.get("exit_code") in (0, None) else f"the census run ended with {r.get('error') or 'an error'}"
    return OpCensus(str(r["framework"]), ops, int(r.get("steps") or 0), time.perf_counter() - t0, note)


def explain_kernel(d: Diagnosis, runner: ExperimentRunner) -> OpCensus | None:
    """When deterministic kernels removed the divergence of ``d``, run the census (one more run of
    ``runner``'s script) and name the op, its pass and call site in ``d`` (detail, fix, summary; the
    census as evidence). Otherwise leave ``d`` as it is."""
    if d.verdict != Verdict.NOT_REPRODUCIBLE or d.cause != Cause.NONDETERMINISTIC_KERNEL:
        return None
    if not any(e.name == "deterministic" and e.identical for e in d.evidence):
        return None   # one thread fixed it, not deterministic kernels: the census's ops are not the cause
    fd, options = d.first_divergence, runner.options
    steps = options.record.max_steps or 1
    if fd is not None and fd.step is not None:
        steps = min(steps, fd.step + 1)   # the ops of the steps up to the divergence are enough
    runner.say(f"doctor: census: one more run naming every op that parts run to run ({fmt_count(steps)} "
               f"step{'s' if steps != 1 else ''})")
    c = census(options.replace(max_steps=steps), workdir=runner.workdir, timeout=runner.timeout)
    runner.launched += 1
    exp = Experiment("census", "one more run recording the ops that part run to run (their call sites)",
                     runs=1, seconds=round(c.seconds, 2) if c else 0.0)
    d.evidence.append(exp)
    if c is None:
        exp.note = "no framework with an op census ran (the census covers PyTorch); the op is inferred from the phase"
        return None
    exp.note, d.census = c.sentence(), c.to_dict()
    exp.acted = [Act("census", f"`{u.label}` ({u.counted(c.steps)})", u.label, u.site or "?") for u in c.ops]
    use = c.primary(fd.phase if fd else None)
    if use is None:
        found = c.note if c.note and not c.framework else (
            f"the census found no op known to part run to run on this CPU in {fmt_count(c.steps)} "
            f"step{'s' if c.steps != 1 else ''}")
        d.summary += f" {found[0].upper()}{found[1:]}, so the op is inferred from the phase only."
        return c
    d.detail = f"{use.detail}, {use.where()}"
    d.fix = _fix(use, fd.name if fd else None)
    others = [u for u in c.ops if u is not use]
    also = (" Also used: " + "; ".join(u.words(c.steps) for u in others) + ".") if others else ""
    trace = fd.phase if fd else None
    mismatch = "" if _PASS.get(str(trace)) == use.phase else (
        f" (the traces first part in the {trace} phase, not in the op's {_PASS_WORDS.get(use.phase, use.phase)})")
    d.summary = (f"The runs part {where_words(fd)}; deterministic kernels make the runs identical, and the census "
                 f"names the op: {use.words(c.steps)}; it {use.fact.get('why') or 'parts run to run'}{mismatch}."
                 f"{also}")
    return c


def _fix(use: OpUse, layer: str | None) -> str:
    f = use.fact
    ratio = f.get("deterministic_ratio")
    cost = ""
    if isinstance(ratio, (int, float)):
        cost = (f" (measured on CPU: {ratio}x the op's default time at {f.get('size')}"
                + (f", {f['spread']}" if f.get("spread") else "") + ")")
    fix = (f"Use deterministic kernels: call `twinrun.deterministic()` (or `torch.use_deterministic_algorithms(True)`) "
           f"before training{cost}; the run-to-run difference comes from `{use.label}` {use.where()}"
           + (f" (the traces first part at `{layer}`)" if layer else "")
           + f", which {f.get('why') or 'parts run to run'}.")
    r = f.get("replacement_ratio")
    cost = f" ({r} the default's time)" if r else ""
    if use.rewrite:
        fix += (f" Or, without the global mode, replace `{use.rewrite['before']}` at {use.site} with "
                f"`{use.rewrite['after']}`, which repeats on CPU{cost}.")
    elif f.get("replacement"):
        fix += f" Or replace that call with {f['replacement']}, which repeats on CPU without the global mode{cost}."
    return fix


# --- the child ------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the script as ``twinrun run`` would, with each imported framework's census installed, and
    report what it found (``{"kind": "census", "framework", "ops", "steps", "exit_code"}``)."""
    from ..runner import run_script

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m twinrun.doctor.census -- <twinrun run arguments>", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        options = RunOptions.from_argv(argv[argv.index("--") + 1:])
    except TwinrunError as exc:
        print(f"twinrun census: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finishers: dict[str, Callable[[], list[dict[str, Any]]]] = {}
    for name, module in CENSUS.items():
        def install(_m: object, name: str = name, module: str = module) -> None:
            finishers[name] = importlib.import_module(module).install()
        frameworks.when_imported(frameworks.module_of(name), install)
    result = run_script(options)
    for name, finish in finishers.items():
        _channel.report(REPORT_KIND, framework=name, ops=finish(), steps=result.steps, exit_code=result.exit_code,
                        error=result.error)
    if not finishers:
        _channel.report(REPORT_KIND, framework=None, ops=[], steps=result.steps, exit_code=result.exit_code)
    return 0 if result.exit_code in (0, 1) else result.exit_code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.exit(code)
