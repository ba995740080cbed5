"""The one way twinrun runs a child process: in its own process group, killable as a whole.

``run`` (``runner.launch``, doctor's experiments, sweep's runs) starts the command in a new session,
waits for it with an optional time limit, and kills the whole group (the script and anything it
started: DataLoader workers, a process pool) when the limit passes or the caller is interrupted.
``kill_all`` stops every child still running, for a caller that is shutting down. On Linux every
child starts through ``_lifeline`` (a parent-death signal), so even ``kill -9`` of twinrun, which
runs no cleanup code, takes its children with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from ._lifeline import lifeline_argv

__all__ = ["ChildResult", "kill_all", "run"]

# Children running now (a registry: kill_all reaches them from another thread).
_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class ChildResult:
    """How a child ended: its exit code (negative: killed by that signal), output, time, whether timed out."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None, capture_stdout: bool = True, stdin_devnull: bool = False) -> ChildResult:
    """Run ``cmd`` to its end (or ``timeout`` seconds) and return how it ended; output is decoded as UTF-8.

    ``capture_stdout=False`` discards stdout. ``KeyboardInterrupt`` (or any exception) while
    waiting kills the group and propagates.
    """
    stdout: int | IO[bytes] = subprocess.PIPE if capture_stdout else subprocess.DEVNULL
    t0 = time.perf_counter()
    # The child dies with this process (kill -9 included). The signal follows the thread that starts
    # the child, and this one waits for it below.
    proc = subprocess.Popen(lifeline_argv(list(cmd)), cwd=cwd, env=dict(env) if env is not None else None,
                            stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL if stdin_devnull else None,
                            start_new_session=True)
    with _lock:
        _live.add(proc)
    timed_out = False
    try:
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
    finally:
        with _lock:
            _live.discard(proc)
    return ChildResult(proc.returncode, _text(out), _text(err), time.perf_counter() - t0, timed_out)


def kill_all() -> None:
    """Kill every child (and its group) still running."""
    with _lock:
        procs = list(_live)
    for p in procs:
        _kill_group(p)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(OSError):
            proc.kill()


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "replace")
