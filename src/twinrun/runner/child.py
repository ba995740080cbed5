"""Running a user's script in this process as ``python script.py`` would, inside ``twinrun.record``.

This is what ``twinrun run`` does (in the child, when ``check``/``doctor`` launch it): same
``sys.argv``, ``__name__ == "__main__"``, ``sys.path[0]`` = the script's folder; the seed,
determinism and interventions of the ``RunOptions`` applied first; the trace recorded around it.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._artifacts import Kind, check_target
from .._errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SCRIPT_FAILED, BadTraceError, UsageError
from ..options import RunOptions
from ..redact import redact_text
from .result import RunResult

__all__ = ["ScriptOutcome", "ScriptTimeout", "default_trace_path", "run_as_main", "run_script"]


def default_trace_path() -> str:
    """``twinrun-<timestamp>.trace`` in the current folder."""
    return time.strftime("twinrun-%Y%m%d-%H%M%S.trace")


def _check_seed_carrier(seed: int | None) -> None:
    """One seed carrier: an explicit --seed that contradicts TWINRUN_SEED is an error, never an override."""
    from ..seeding import ENV_ROOT

    raw = os.environ.get(ENV_ROOT, "").strip()
    if seed is None or not raw or raw == str(seed):
        return
    raise UsageError(f"--seed {seed} conflicts with {ENV_ROOT}={raw} in the environment (which seed_everything "
                     f"would use); drop one: unset {ENV_ROOT}, or drop --seed")


class ScriptTimeout(BaseException):
    """Raised in the script's main thread at ``--timeout``; a BaseException, so ``except Exception`` in the
    script does not swallow it."""


# After the time limit, how long a script that ignores ScriptTimeout (a bare except, a C call that
# never returns) gets before the process ends anyway.
_GRACE = 10.0


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ScriptTimeout` in this (main) thread after ``seconds``; end the process (exit 3) if
    the script is still running ``_GRACE`` seconds later."""
    if seconds is None:
        yield
        return
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise ScriptTimeout

    def last_resort() -> None:
        print(f"twinrun run: the script did not stop {_GRACE:g} s after its --timeout of {seconds:g} s; ending it "
              "(its trace keeps the steps committed so far)", file=sys.stderr, flush=True)
        os._exit(EXIT_SCRIPT_FAILED)

    previous = signal.signal(signal.SIGALRM, on_alarm) if main else None
    if main:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    watchdog = threading.Timer(seconds + (_GRACE if main else 0.0), last_resort)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def run_script(options: RunOptions) -> RunResult:
    """Run the script of ``options`` here, recording its trace; return what happened.

    Bad input raises :class:`UsageError`/:class:`BadTraceError` before anything runs. The script
    raising is not re-raised: its traceback goes to stderr and the result has exit code 3.

    Under a multi-process launcher (``RANK``/``WORLD_SIZE`` set: torchrun, ``--nproc``) this process is one
    rank: it writes its own trace (``out.rank<R>.trace``), shuts down the process group the script left
    started, and reports its outcome to the parent (``runner.distributed``).
    """
    from .. import ranks, recording

    rank = ranks.current()
    if rank is not None:
        from .distributed import as_rank

        options = as_rank(options, rank)
    path = Path(options.script)
    _check_seed_carrier(options.seed)
    if options.record.against is not None:
        open_reference(options.record.against).close()   # a bad reference: one line, before the script
    trace_path = options.output or default_trace_path()
    # Only onto nothing, an empty file or a trace; never the script or the reference (one line, exit 2).
    check_target(trace_path, Kind.TRACE, protected=_protected(options))

    if options.seed is not None:
        from ..seeding import seed_everything

        seed_everything(options.seed)
    if options.deterministic or options.threads is not None:
        from ..determinism import deterministic

        deterministic(threads=options.threads)
    if options.interventions:
        from ..interventions import apply

        apply(options.interventions)

    t0 = time.perf_counter()
    result = RunResult(EXIT_OK, trace_path, "complete")
    header: dict[str, Any] = {"twinrun_command": list(sys.argv), "script": str(path),
                              "script_args": list(options.args)}
    with recording.record(trace_path, header=header, options=options.record, lock=options.lock,
                          protected=_protected(options)) as recorder:
        try:
            with _time_limit(options.timeout):
                outcome = run_as_main(path, options.args, stop=recording.StopRun)
        except ScriptTimeout:
            outcome = ScriptOutcome(EXIT_SCRIPT_FAILED, f"timed out after {options.timeout:g} s (--timeout)")
            result.stop_reason = "timeout"
        if isinstance(outcome.stopped, recording.StopRun):
            result.stop_reason = outcome.stopped.reason
        # the script's exception text is stored and shown: secrets in it are redacted
        result.exit_code, result.error = outcome.exit_code, outcome.error and redact_text(outcome.error)
        if result.exit_code == EXIT_SCRIPT_FAILED:
            recorder.close("failed")
        else:
            recorder.close()  # complete, stopped (max-steps) or diverged, as the recorder knows
        result.steps = recorder.step   # after close: a last update by hand ends its step there
        result.status = recorder.writer.status
        result.seen = dict(recorder.seen)
        if recorder.reference_error is not None:   # the reference changed under the run: bad input
            raise BadTraceError(recorder.reference_error)
        if recorder.divergence is not None:
            result.divergence = recorder.divergence_record()
            if result.exit_code == EXIT_OK:
                result.exit_code = EXIT_DIFFERENT
    result.seconds = time.perf_counter() - t0
    if rank is not None:
        from .distributed import finish_rank

        finish_rank(result, rank)
    return result


@dataclass(frozen=True)
class ScriptOutcome:
    """How a script run as ``__main__`` ended: exit code 0 or 3, ``"ExcType: message"`` when it failed,
    and the ``stop`` exception that ended it early (if any)."""

    exit_code: int
    error: str | None = None
    stopped: BaseException | None = None


def run_as_main(path: Path, args: Sequence[str], *, stop: type[BaseException] | None = None) -> ScriptOutcome:
    """Run ``path`` here as ``python path args`` would: same ``sys.argv``, ``__name__ == "__main__"``,
    ``sys.path[0]`` the script's folder (both restored after). The script raising (or exiting
    non-zero) prints its traceback without twinrun's frames and gives exit code 3; an exception of
    type ``stop`` (a recorder's ``StopRun``) ends it cleanly and is returned in ``stopped``."""
    old_argv, old_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [str(path), *args]
    if sys.path:
        sys.path[0] = str(path.parent)
    else:
        sys.path.append(str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            if not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
            return ScriptOutcome(EXIT_SCRIPT_FAILED, f"SystemExit: {e.code}")
    except BaseException as e:
        if stop is not None and isinstance(e, stop):
            return ScriptOutcome(EXIT_OK, stopped=e)
        if not isinstance(e, Exception):
            raise   # KeyboardInterrupt and the like: not the script's failure
        _print_user_traceback(e, path)
        return ScriptOutcome(EXIT_SCRIPT_FAILED, f"{type(e).__name__}: {e}")
    finally:
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
    return ScriptOutcome(EXIT_OK)


def _protected(options: RunOptions) -> list[tuple[str, str | None]]:
    return [("the script", options.script), ("the --against reference", options.record.against)]


def open_reference(against: str | os.PathLike[str]) -> Any:
    """The reference trace of ``--against``, opened and read through once (``Trace.check``): a file that
    is not a readable trace, or holds one bad event or value, is a one-line ``BadTraceError`` now,
    before the script starts -- not an error raised inside the script's training loop."""
    from .._errors import BadTraceError
    from ..trace import Trace

    if not os.path.lexists(against):
        raise BadTraceError(f"reference trace {str(against)!r} does not exist; give a trace written by 'twinrun run'")
    t = Trace.open(against)
    try:
        t.check()
    except BaseException:
        t.close()
        raise
    return t


def _print_user_traceback(exc: BaseException, script: Path) -> None:
    """The script's traceback as Python would print it, without twinrun's and runpy's frames."""
    tb = exc.__traceback__
    target = str(script)
    while tb is not None and tb.tb_frame.f_code.co_filename != target:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
