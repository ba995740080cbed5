"""Running a user's script as ``python script.py`` would, inside ``twinrun.record``.

Two halves:

- :func:`run_script` runs the script in *this* process (it is what ``twinrun run`` does): same
  ``sys.argv``, ``__name__ == "__main__"``, ``sys.path[0]`` = the script's folder; seeding,
  determinism and interventions applied first; the trace recorded around it.
- :func:`launch` starts ``python -m twinrun run ...`` in a fresh process with the user's
  environment (``PYTHONHASHSEED`` as the user has it) plus overrides, and returns a
  :class:`RunResult`. ``twinrun check``, ``doctor`` and ``sweep`` build on it.

>>> r = launch("train.py", max_steps=5, seed=0)       # doctest: +SKIP
>>> r.returncode, r.status, r.trace_path               # doctest: +SKIP
(0, 'stopped', '/tmp/twinrun-.../run.trace')
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ._errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED, BadTraceError, UsageError

__all__ = ["RunResult", "RunOutcome", "launch", "run_script", "check_script", "open_reference", "default_trace_path",
           "parse_capture"]



@dataclass
class RunResult:
    """One fresh-process run: exit code, its trace, its output, how long it took, the trace status.

    ``status`` is the trace's status (``complete``, ``stopped``, ``diverged``, ``failed``,
    ``running`` for a killed run), ``missing`` when no readable trace was written, ``timeout`` when
    the run was killed after ``timeout`` seconds.
    """

    returncode: int
    trace_path: str
    stdout: str
    stderr: str
    seconds: float
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOutcome:
    """What :func:`run_script` did in this process."""

    exit_code: int
    trace_path: str
    status: str
    steps: int
    seconds: float
    error: str | None = None          # "ExcType: message" when the script raised
    stop_reason: str | None = None    # "max-steps" or "diverged"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --- validation ----------------------------------------------------------------------------------
def check_script(script: str | os.PathLike) -> Path:
    """The script's absolute path, or a one-line :class:`UsageError` when it is not a Python file."""
    p = Path(script)
    if not p.exists():
        raise UsageError(f"script {str(script)!r} does not exist; give the path of a Python training script")
    if p.is_dir():
        raise UsageError(f"{str(script)!r} is a folder, not a script; give the path of a .py file")
    if p.suffix != ".py":
        raise UsageError(f"{str(script)!r} is not a Python script (.py); give the path of a .py file")
    return p.resolve()


def _positive(name: str, value, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = None
    if v is None or v < 1 or str(value).strip() not in (str(v), f"+{v}"):
        raise UsageError(f"{name} must be a whole number >= 1, not {value!r}")
    return v


def parse_capture(capture) -> tuple[str, ...] | None:
    """``"grad,param"`` or a sequence -> a tuple of phases (checked); None or "all" -> None (all)."""
    from .trace import PHASES

    if capture is None:
        return None
    items = capture.split(",") if isinstance(capture, str) else list(capture)
    items = [c.strip() for c in items if c.strip()]
    if not items:
        raise UsageError(f"--capture needs at least one phase; choose from {', '.join(PHASES)} or 'all'")
    if items == ["all"]:
        return None
    bad = [c for c in items if c not in PHASES]
    if bad:
        raise UsageError(f"unknown phase {bad[0]!r} in --capture; choose from {', '.join(PHASES)} or 'all'")
    return tuple(dict.fromkeys(items))


def default_trace_path() -> str:
    """``twinrun-<timestamp>.trace`` in the current folder."""
    return time.strftime("twinrun-%Y%m%d-%H%M%S.trace")


def open_reference(against) -> object:
    from .trace import Trace

    if against is None:
        return None
    if not Path(against).exists():
        raise BadTraceError(f"reference trace {str(against)!r} does not exist; give a trace written by 'twinrun run'")
    return Trace.open(against)


# --- in this process -----------------------------------------------------------------------------
def run_script(script, args: Sequence[str] = (), *, trace_path=None, capture=None, every=1,
               max_steps=None, seed=None, deterministic=False, threads=None, against=None,
               keep_going=False, interventions: Sequence[str] = ()) -> RunOutcome:
    """Run ``script`` here as ``python script args`` would, recording its trace.

    Bad input raises :class:`UsageError`/:class:`BadTraceError` before anything runs. The script
    raising is not re-raised: its traceback goes to stderr and the outcome has exit code 3.
    """
    from . import trace as _trace

    path = check_script(script)
    every = _positive("--every", every, allow_none=False)
    max_steps = _positive("--max-steps", max_steps)
    threads = _positive("--threads", threads)
    phases = parse_capture(capture)
    ref = open_reference(against)
    trace_path = str(trace_path or default_trace_path())
    names = _check_interventions(interventions)

    if seed is not None:
        from .seeding import seed_everything

        seed_everything(seed)
    if deterministic or threads is not None:
        from .determinism import deterministic as _deterministic

        _deterministic(threads=threads)
    if names:
        importlib.import_module("twinrun.interventions").apply(names)

    options = dict(every=every, max_steps=max_steps, against=ref, keep_going=keep_going)
    if phases is not None:
        options["capture"] = phases
    t0 = time.perf_counter()
    outcome = RunOutcome(EXIT_OK, trace_path, "complete", 0, 0.0)
    header = {"twinrun_command": list(sys.argv), "script": str(path), "script_args": list(args)}
    old_argv, old_path0 = sys.argv[:], sys.path[0] if sys.path else None
    try:
        with _trace.record(trace_path, header=header, **options) as recorder:
            sys.argv = [str(script), *args]
            if sys.path:
                sys.path[0] = str(path.parent)
            else:
                sys.path.append(str(path.parent))
            try:
                runpy.run_path(str(path), run_name="__main__")
            except _trace.StopRun as stop:
                outcome.stop_reason = stop.reason
            except SystemExit as e:
                if e.code not in (None, 0):
                    outcome.exit_code, outcome.error = EXIT_SCRIPT_FAILED, f"SystemExit: {e.code}"
                    if not isinstance(e.code, int):
                        print(e.code, file=sys.stderr)
            except Exception as e:  # the user's script failed: its traceback, not ours
                _print_user_traceback(e, path)
                outcome.exit_code, outcome.error = EXIT_SCRIPT_FAILED, f"{type(e).__name__}: {e}"
            outcome.steps = recorder.step
            if outcome.exit_code == EXIT_SCRIPT_FAILED:
                recorder.close("failed")
            else:
                recorder.close()  # complete, stopped (max-steps) or diverged, as the recorder knows
            outcome.status = recorder.writer.status
            if getattr(recorder, "divergence", None) is not None:
                outcome.extra["divergence"] = recorder.divergence
                if outcome.exit_code == EXIT_OK:
                    outcome.exit_code = EXIT_DIFFERENT
    finally:
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _check_interventions(names) -> list[str]:
    if not names:
        return []
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    try:
        _iv = importlib.import_module("twinrun.interventions")
    except ModuleNotFoundError as e:
        if e.name != "twinrun.interventions":
            raise
        raise UsageError(f"cannot apply intervention {names[0]!r}: this twinrun has no "
                         "twinrun.interventions module; upgrade twinrun or drop --intervene") from None
    known = list(getattr(_iv, "NAMES", ()))
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"unknown intervention {bad[0]!r}; choose from {', '.join(known) or '(none)'}")
    return names


def _print_user_traceback(exc: BaseException, script: Path) -> None:
    """The script's traceback as Python would print it, without twinrun's and runpy's frames."""
    tb = exc.__traceback__
    target = str(script)
    while tb is not None and tb.tb_frame.f_code.co_filename != target:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()


# --- in a fresh process --------------------------------------------------------------------------
def launch(script, args: Sequence[str] = (), *, trace_path=None, seed=None, env=None, max_steps=None,
           capture=None, every=1, against=None, keep_going=False, deterministic=False, threads=None,
           timeout=None, cwd=None, interventions: Sequence[str] = ()) -> RunResult:
    """Run ``python -m twinrun run ... script args`` in a fresh process and wait for it.

    The child gets this process's environment plus ``env`` (a value of None removes a variable), so
    ``PYTHONHASHSEED`` and thread variables are as the user has them unless overridden. With no
    ``trace_path`` the trace goes to a new temporary folder. Bad arguments raise :class:`UsageError`
    here, before any process starts.

    >>> r = launch("train.py", ["--epochs", "1"], max_steps=3, seed=0)   # doctest: +SKIP
    >>> r.status
    'stopped'
    """
    path = check_script(script)
    every = _positive("--every", every, allow_none=False)
    max_steps = _positive("--max-steps", max_steps)
    threads = _positive("--threads", threads)
    phases = parse_capture(capture)
    if trace_path is None:
        trace_path = os.path.join(tempfile.mkdtemp(prefix="twinrun-"), "run.trace")
    trace_path = str(Path(trace_path).resolve())

    cmd = [sys.executable, "-m", "twinrun", "run", "-o", trace_path, "--every", str(every)]
    if phases is not None:
        cmd += ["--capture", ",".join(phases)]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if deterministic:
        cmd.append("--deterministic")
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if against is not None:
        cmd += ["--against", str(Path(against).resolve())]
    if keep_going:
        cmd.append("--keep-going")
    if interventions:
        names = interventions.split(",") if isinstance(interventions, str) else list(interventions)
        cmd += ["--intervene", ",".join(names)]
    cmd += [str(path), "--", *map(str, args)]

    child_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            child_env.pop(k, None)
        else:
            child_env[k] = str(v)
    _make_importable(child_env)

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    seconds = time.perf_counter() - t0
    status = "timeout" if timed_out else _trace_status(trace_path)
    return RunResult(proc.returncode, trace_path, out, err, seconds, status)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _trace_status(path: str) -> str:
    from .trace import Trace

    if not os.path.exists(path):
        return "missing"
    try:
        return Trace.open(path).status
    except BadTraceError:
        return "missing"


def _make_importable(env: dict) -> None:
    """Let the child import this twinrun when it runs from a source tree rather than an install."""
    here = str(Path(__file__).resolve().parent.parent)
    if Path(here).name in ("site-packages", "dist-packages"):
        return
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in (str(Path(p).resolve()) for p in parts):
        env["PYTHONPATH"] = os.pathsep.join([*parts, here])
