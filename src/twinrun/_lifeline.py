"""Child processes that die with twinrun, and per-run files that leave nothing on disk.

``kill -9`` of ``twinrun sweep`` (or ``check``/``doctor``) runs no cleanup code: its scripts would go on
running and its temporary ``twinrun-metrics-*.jsonl`` files would stay in ``/tmp``. Two tools:

- :func:`lifeline_argv` wraps a command so that, on Linux, the child gets a parent-death signal
  (``PR_SET_PDEATHSIG``, kept across ``exec``) before it becomes the user's program: SIGKILL of
  twinrun kills it too. It is a tiny trampoline (``python -I -S .../_lifeline.py PID -- CMD...``: this
  file alone, no site packages, about as fast as Python starts) rather than a ``preexec_fn``, which
  is unsafe in a process with threads (sweep launches from a thread pool). Start the child in its
  own process group as well, so a timeout can kill what *it* started.
  The signal fires when the thread that started the child ends: launch from a thread that waits
  for the child (as ``run_one`` does), not from a short-lived one.
- :func:`anonymous_file` makes a file for a child to write (metrics, reports) that has no name on
  disk: a ``memfd`` on Linux, which the child (and anything it starts) opens as
  ``/proc/<this pid>/fd/N`` -- a path that means the same file in every process, unlike
  ``/dev/fd/N``. When this process dies, the kernel frees it. Elsewhere it falls back to a named
  temporary file the caller removes.

>>> argv = lifeline_argv(["python", "train.py"])   # doctest: +SKIP
>>> fd, path = anonymous_file("twinrun-metrics")   # doctest: +SKIP
>>> subprocess.Popen(argv, env={..., METRICS_ENV: path}, start_new_session=True)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile

__all__ = ["anonymous_file", "lifeline_argv", "main", "supported"]

_PR_SET_PDEATHSIG = 1


def supported() -> bool:
    """Whether this platform has a parent-death signal (Linux)."""
    return sys.platform.startswith("linux")


def lifeline_argv(argv: list[str], *, python: str | None = None) -> list[str]:
    """``argv`` prefixed so that the child dies with this process (Linux); ``argv`` unchanged elsewhere."""
    if not supported():
        return list(argv)
    # -I -S: this file only (stdlib imports), no user site, no site packages: the cheapest start
    return [python or sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), "--", *argv]


def anonymous_file(name: str) -> tuple[int, str]:
    """``(fd, path)``: a file open read-write in this process as ``fd``, which any process of this
    user (a child, its own children) opens as ``path`` while this process lives. On Linux it has no
    name on disk at all; elsewhere ``path`` is a named temporary file (remove it when done). Read it
    back with :func:`read_all`; close ``fd`` when done."""
    proc = f"/proc/{os.getpid()}/fd"
    if hasattr(os, "memfd_create") and os.path.isdir(proc):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)   # children open it by path; none inherits the descriptor
        return fd, f"{proc}/{fd}"
    fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".jsonl")
    return fd, path


def read_all(fd: int) -> bytes:
    """Everything written to the file behind ``fd`` (from :func:`anonymous_file`)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _set_parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m twinrun._lifeline PARENT_PID -- CMD ARGS...``: die with PARENT_PID, become CMD."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m twinrun._lifeline PARENT_PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    parent = int(args[0])
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:   # the parent died before the signal was armed
        return 137
    cmd = args[2:]
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"twinrun: cannot start {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
