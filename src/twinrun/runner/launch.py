"""Running ``python -m twinrun run ...`` in a fresh process, as the user would run the script.

The child gets this process's environment plus overrides (a value of None removes a variable), so
``PYTHONHASHSEED`` and thread variables are as the user has them unless a caller changes them; its
options travel as ``RunOptions.to_argv()``; what it reports (interventions that acted) comes back
through ``twinrun._channel``, never parsed out of stderr.

>>> r = launch(RunOptions.create("train.py", max_steps=5, seed=0))      # doctest: +SKIP
>>> r.exit_code, r.status, r.trace_path                                  # doctest: +SKIP
(0, 'stopped', '/tmp/twinrun-.../run.trace')
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import _channel, _process
from .._errors import BadTraceError
from .._lifeline import anonymous_file
from ..options import RunOptions, timeout_seconds
from .result import RunResult

__all__ = ["launch", "launch_module"]


def launch(options: RunOptions | str | os.PathLike[str], args: Any = (), *,
           env: Mapping[str, str | None] | None = None, timeout: float | None = None,
           cwd: str | os.PathLike[str] | None = None, **option_values: Any) -> RunResult:
    """Run the script of ``options`` in a fresh process and wait for it.

    ``options`` is a ``RunOptions``, or a script path with its ``args`` and the options as keywords
    (``trace_path=``, ``max_steps=``, ``seed=``, ``threads=``, ...: ``RunOptions.create``'s). Without an
    output path the trace goes to a new temporary folder. Bad options raise :class:`UsageError` here,
    before any process starts. ``timeout`` (default: the options' own) kills the run's whole process group
    after that many seconds.
    """
    if not isinstance(options, RunOptions):
        if "trace_path" in option_values:
            option_values["output"] = option_values.pop("trace_path")
        options = RunOptions.create(options, args, **option_values)
    elif option_values or args:
        raise TypeError("launch() takes RunOptions, or a script with its options as keywords, not both")
    output = options.output or os.path.join(tempfile.mkdtemp(prefix="twinrun-"), "run.trace")
    options = options.replace(output=str(Path(output).resolve()))
    if options.record.against is not None:
        options = options.replace(against=str(Path(options.record.against).resolve()))
    # One enforcement of the time limit: here, by killing the child's group (status "timeout").
    limit = timeout_seconds(timeout) if timeout is not None else options.timeout
    options = options.replace(timeout=None)
    assert options.output is not None

    if options.nproc is not None:
        from .. import frameworks, ranks

        # torchrun starts `python -m twinrun run` on each rank with this interpreter and environment.
        done, reports = launch_module(["twinrun", "run", *options.replace(nproc=None).to_argv()],
                                      env={**(env or {}), ranks.ENV_LAUNCHER: "1"}, timeout=limit, cwd=cwd,
                                      launcher=[*frameworks.launcher(options.nproc), "-m"])
        return _ranks_result(options, done, reports)
    done, reports = launch_module(["twinrun", "run", *options.to_argv()], env=env, timeout=limit, cwd=cwd)
    status, steps, divergence, seen = ("timeout", 0, None, {}) if done.timed_out else _trace_facts(options.output)
    return RunResult(done.returncode, options.output, status, steps=steps, seconds=done.seconds,
                     divergence=divergence, stdout=done.stdout, stderr=done.stderr, reports=reports, seen=seen)


def launch_module(argv: Sequence[str], *, env: Mapping[str, str | None] | None = None,
                  timeout: float | None = None, cwd: str | os.PathLike[str] | None = None,
                  launcher: Sequence[str] | None = None) -> tuple[_process.ChildResult, list[dict[str, Any]]]:
    """Run ``python -m <argv>`` in a fresh process (``_process.run``: its own process group, killed on
    timeout) with this process's environment plus ``env`` (None removes a variable) and this twinrun
    importable; return how it ended and what it reported through ``twinrun._channel``. The sibling of
    :func:`launch` for children that are not ``twinrun run`` (the probe's). ``launcher`` replaces
    ``python -m`` (``torch.distributed.run ... -m`` for N ranks, which all report to the same file)."""
    child_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            child_env.pop(k, None)
        else:
            child_env[k] = str(v)
    _make_importable(child_env)
    fd, report_path = anonymous_file("twinrun-report")   # no name on disk: nothing left if we are killed
    child_env[_channel.ENV] = report_path
    try:
        prefix = list(launcher) if launcher is not None else [sys.executable, "-m"]
        done = _process.run([*prefix, *argv], env=child_env, cwd=cwd, timeout=timeout)
        reports = _channel.read(report_path)
    finally:
        os.close(fd)
        if not report_path.startswith("/proc/"):
            Path(report_path).unlink(missing_ok=True)
    return done, reports


def _ranks_result(options: RunOptions, done: _process.ChildResult, reports: list[dict[str, Any]]) -> RunResult:
    """A run of N ranks: one result per rank (from its report), the worst rank's code and status."""
    from .distributed import REPORT_KIND, collect, combine

    assert options.output is not None and options.nproc is not None
    per_rank, notes = collect(options.output, options.nproc, reports, done.returncode, done.timed_out, _trace_facts)
    code, status = combine(per_rank)
    lead = per_rank[0]
    _, _, _, seen = _trace_facts(lead.trace_path)
    return RunResult(code, lead.trace_path, status, steps=min(r.steps for r in per_rank), seconds=done.seconds,
                     error=next((r.error for r in per_rank if r.error), None),
                     stop_reason=lead.stop_reason,
                     divergence=next((r.divergence for r in per_rank if r.divergence), None),
                     stdout=done.stdout, stderr=done.stderr, seen=seen, notes=notes, ranks=per_rank,
                     reports=[r for r in reports if r.get("kind") != REPORT_KIND])


def _trace_facts(path: str) -> tuple[str, int, dict[str, Any] | None, dict[str, int]]:
    """The trace's status, committed steps, live divergence and the hooks that fired; ``missing`` when
    there is no readable trace."""
    from ..trace import Trace

    if not os.path.exists(path):
        return "missing", 0, None, {}
    try:
        with Trace.open(path) as t:
            divergence = t.meta("divergence")
            seen = t.meta("seen")
            seen = {str(k): int(v) for k, v in seen.items() if isinstance(v, int)} if isinstance(seen, dict) else {}
            return t.status, len(t.steps()), divergence if isinstance(divergence, dict) else None, seen
    except BadTraceError:
        return "missing", 0, None, {}


def _make_importable(env: dict[str, str]) -> None:
    """Let the child import this twinrun when it runs from a source tree rather than an install."""
    here = str(Path(__file__).resolve().parents[2])
    if Path(here).name in ("site-packages", "dist-packages"):
        return
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in (str(Path(p).resolve()) for p in parts):
        env["PYTHONPATH"] = os.pathsep.join([*parts, here])
