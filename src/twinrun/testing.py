"""twinrun in a test suite: assert that a training script repeats, or still matches a golden trace.

:func:`assert_reproducible` runs a script in fresh processes under ``twinrun run`` (as ``twinrun check``
does) and raises :class:`NotReproducible` (an ``AssertionError``) with twinrun's lead sentence when
the runs part: the first step, phase and layer, and by how much. With ``golden=`` it compares a live
run with a stored trace instead, and ``update=True`` (pytest: ``--twinrun-update``) rewrites that
trace. The pytest plugin's ``twinrun_check`` fixture (``twinrun.pytest_plugin``) calls it; a unittest
suite can call it directly.

>>> assert_reproducible("train.py", max_steps=5)                                  # doctest: +SKIP
>>> assert_reproducible("train.py", golden="golden/train.trace", ulps=4)         # doctest: +SKIP

Runs are fresh processes because that is how the user runs the script: each gets its own hash seed
(``PYTHONHASHSEED`` as the environment has it), its own RNG state at import, its own data-loader
workers. Two calls in one process would share all of that and miss exactly those causes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import BadTraceError, UsageError
from .comparison import Comparison, diff
from .comparison.tolerance import Spec, Tolerance, ToleranceCheck, within_tolerance
from .options import RunOptions, positive_int
from .runner import RunResult, launch
from .trace import Trace

__all__ = ["CheckReport", "NotReproducible", "assert_reproducible"]

UPDATE_HINT = "pytest --twinrun-update"


class NotReproducible(AssertionError):
    """The runs part (or the live run parts from the golden trace), or twinrun cannot tell whether they do."""


@dataclass
class CheckReport:
    """What a passing check found: the runs, the comparisons, and whether a golden trace was written."""

    script: str
    runs: list[RunResult]
    reference: str                                   # the golden trace, or run 1's
    comparisons: list[Comparison] = field(default_factory=list)
    tolerated: list[ToleranceCheck] = field(default_factory=list)   # comparisons that passed only within the tolerance
    golden_written: str | None = None

    def sentence(self) -> str:
        if self.golden_written is not None:
            return f"wrote the golden trace {self.golden_written} ({self.runs[0].steps} steps)"
        if self.tolerated:
            return self.tolerated[-1].sentence()
        return self.comparisons[-1].sentence() if self.comparisons else ""

    def to_dict(self) -> dict[str, Any]:
        return {"script": self.script, "reference": self.reference, "runs": [r.to_dict() for r in self.runs],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "tolerated": [t.to_dict() for t in self.tolerated], "golden_written": self.golden_written,
                "sentence": self.sentence()}


def _resolve(path: str | os.PathLike[str], base: str | os.PathLike[str] | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base is None else Path(base) / p


def assert_reproducible(script: str | os.PathLike[str], *script_args: Any, max_steps: int | None = 5,
                        runs: int | None = None, golden: str | os.PathLike[str] | None = None,
                        update: bool = False, ulps: Spec = None, rtol: Spec = None, seed: int | None = None,
                        deterministic: bool = False, threads: int | None = None,
                        capture: str | Sequence[str] | None = None, timeout: float | None = None,
                        env: Mapping[str, str | None] | None = None, base: str | os.PathLike[str] | None = None,
                        workdir: str | os.PathLike[str] | None = None) -> CheckReport:
    """Run ``script`` in fresh processes and raise :class:`NotReproducible` unless the runs agree.

    Without ``golden``: ``runs`` (default 2) runs, each compared with the first. With ``golden``: ``runs``
    (default 1) live runs, each compared with the golden trace; ``update=True`` records one run and
    writes it there instead. Exact unless ``ulps``/``rtol`` (a number for every phase, or a dict by phase:
    ``ulps={"grad": 8, "param": 4}``; phases left out stay exact). ``seed`` calls
    ``twinrun.seed_everything(seed)`` in each run before the script (None: the script as it is);
    ``deterministic``, ``threads``, ``capture``, ``max_steps`` are ``twinrun run``'s options. Relative
    ``script`` and ``golden`` paths are taken from ``base`` (the plugin: the test file's folder).
    Bad options raise a one-line :class:`UsageError` before anything runs.
    """
    tolerance = Tolerance.create(ulps=ulps, rtol=rtol)
    script_path = _resolve(script, base)
    if not script_path.exists():
        raise UsageError(f"script {str(script)!r} does not exist (looked for {script_path}); relative paths are "
                         "taken from the test file's folder")
    options = RunOptions.create(script_path, script_args, max_steps=max_steps, seed=seed,
                                deterministic=deterministic, threads=threads, capture=capture)
    if not isinstance(update, bool):
        raise UsageError(f"update must be True or False, not {update!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
    golden_path = None if golden is None else _resolve(golden, base)
    default_runs = 1 if golden_path is not None else 2
    n = positive_int("runs", default_runs if runs is None else runs, allow_none=False)
    assert n is not None
    if golden_path is None and n < 2:
        raise UsageError(f"runs must be at least 2 to compare runs with each other, not {runs!r} "
                         "(or compare with a stored trace: golden=PATH)")
    if update and golden_path is None:
        raise UsageError("update=True needs golden=PATH: the trace to write")
    if golden_path is not None and not update:
        _check_golden(golden_path)
    if golden_path is not None and update and golden_path.exists():
        _check_golden(golden_path, overwrite=True)

    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="twinrun-test-"))
    folder.mkdir(parents=True, exist_ok=True)
    name = script_path.name
    results: list[RunResult] = []
    for i in range(1, (1 if update else n) + 1):
        r = launch(options.replace(output=str(folder / f"run-{i}.trace")), env=env, timeout=timeout)
        results.append(r)
        _raise_unless_comparable(r, i, name, folder)

    if update:
        assert golden_path is not None
        golden_path.parent.mkdir(parents=True, exist_ok=True)
        partial = golden_path.with_name(golden_path.name + ".partial")
        shutil.copyfile(results[0].trace_path, partial)
        os.replace(partial, golden_path)   # never a half-written golden
        return CheckReport(str(script_path), results, str(golden_path), golden_written=str(golden_path))

    reference = str(golden_path) if golden_path is not None else results[0].trace_path
    others = results if golden_path is not None else results[1:]
    report = CheckReport(str(script_path), results, reference)
    for i, r in enumerate(others, start=1 if golden_path is not None else 2):
        what = (f"{name}, run {i} against the golden trace {golden_path}" if golden_path is not None
                else f"{name}, run 1 vs run {i} in fresh processes")
        _compare(report, reference, r, what, tolerance, golden_path is not None, folder)
    return report


def _check_golden(path: Path, *, overwrite: bool = False) -> None:
    """A one-line failure unless ``path`` is a readable trace (``overwrite``: only a trace may be replaced)."""
    if path.is_dir():
        raise UsageError(f"golden {str(path)!r} is a folder; give the path of a .trace file")
    if not path.exists():
        raise NotReproducible(f"golden trace {path} does not exist; run `{UPDATE_HINT}` to write it")
    try:
        Trace.open(path).close()
    except BadTraceError:
        fix = ("twinrun will not overwrite it; remove it or choose another golden path" if overwrite else
               f"remove it and run `{UPDATE_HINT}` to write a golden trace there")
        raise UsageError(f"golden {str(path)!r} is not a twinrun trace; {fix}") from None


def _raise_unless_comparable(r: RunResult, i: int, name: str, folder: Path) -> None:
    """Fail when run ``i`` gave no trace with a step to compare: the script failed, or no step was seen."""
    if r.stepless:
        raise NotReproducible(f"twinrun cannot tell whether {name} repeats: in run {i}, {r.no_step_reason()}")
    if r.exit_code in (0, 1) and r.status in ("complete", "stopped", "diverged"):
        return
    why = "timed out" if r.status == "timeout" else f"failed with exit code {r.exit_code}"
    tail = "\n".join(r.stderr.strip().splitlines()[-15:])
    raise NotReproducible(f"run {i} of {name} {why} (its trace is in {folder})" + (f":\n{tail}" if tail else ""))


def _compare(report: CheckReport, reference: str, r: RunResult, what: str, tolerance: Tolerance, golden: bool,
             folder: Path) -> None:
    with Trace.open(reference) as ref, Trace.open(r.trace_path) as live:
        ref_steps, live_steps = len(ref.steps()), len(live.steps())
        c = diff(ref, live)
        report.comparisons.append(c)
        hint = f" If the change is intended, rerun with `{UPDATE_HINT}`." if golden else ""
        if ref_steps != live_steps:
            first = "the golden trace" if golden else "run 1"
            raise NotReproducible(f"twinrun: {what}: {first} recorded {ref_steps} steps, this run {live_steps}."
                                  f"{hint} (traces in {folder})")
        if c.identical:
            return
        if not tolerance.exact and not c.different_models:
            check = within_tolerance(ref, live, tolerance)
            if check.passed:
                report.tolerated.append(check)
                return
            lead = check.sentence()
        else:
            lead = c.sentence()
    raise NotReproducible(f"twinrun: {what}: {lead}{_env_text(c)}{hint} (traces in {folder})")


def _env_text(c: Comparison) -> str:
    """The environment differences that can change numerics, briefly (a golden from another machine)."""
    if c.env_diff is None or not c.env_diff.numerics:
        return ""
    items = c.env_diff.by_rank("numerics")
    shown = ", ".join(f"{d.key} {d.a!r} vs {d.b!r}" for d in items[:3])
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return f" Environment differences that can change numerics: {shown}{more}."

