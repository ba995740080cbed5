"""The process-level interventions: ``fixed-clock``, ``later-clock`` and ``one-cpu``.

- ``fixed-clock``: ``time.time()`` and ``time.time_ns()`` called from the program's own code (not from
  libraries) return a fixed, slowly rising clock: a seed or key taken from the clock repeats.
- ``later-clock``: the same calls read the real clock 25 hours, 1 minute and 1.5 seconds later, as a
  rerun tomorrow would. Doctor gives it to the second run of each pair (unless the pair fixes the
  clock): its two runs start in the same instant, and a seed of ``int(time.time())`` would otherwise
  repeat between them by coincidence. It reports nothing: it is how runs differ, not a seeding.
- ``one-cpu``: the process may use one CPU only (``os.sched_setaffinity``), so every framework's thread
  pool starts with one thread; for doctor's thread-count probe, not a seeding.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

from .._errors import UsageError
from ..frameworks.base import Intervention, InterventionContext

__all__ = ["INTERVENTIONS"]

_CLOCK_START_NS = 1_700_000_000 * 10**9
_CLOCK_TICK_NS = 1_000_000   # each call of the program's: 1 ms later


def _program_clock(ctx: InterventionContext, now_ns: Callable[[], int], act: str | None) -> None:
    """``time.time()`` and ``time.time_ns()`` called from the program's own code read ``now_ns()``
    (reporting the call as intervention ``act``'s, when given); libraries keep the real clock."""
    if getattr(time.time_ns, "_twinrun_patched", False):
        return
    real_time, real_time_ns = time.time, time.time_ns

    def time_ns() -> int:
        if not ctx.from_program(1):
            return real_time_ns()
        if act is not None:
            ctx.note(act, "time.time_ns()", "time.time_ns()")
        return now_ns()

    def time_() -> float:
        if not ctx.from_program(1):
            return real_time()
        if act is not None:
            ctx.note(act, "time.time()", "time.time()")
        return now_ns() / 1e9

    time_ns._twinrun_patched = time_._twinrun_patched = True  # type: ignore[attr-defined]
    time.time_ns, time.time = time_ns, time_


def _apply_clock(ctx: InterventionContext) -> None:
    ticks = itertools.count()
    _program_clock(ctx, lambda: _CLOCK_START_NS + next(ticks) * _CLOCK_TICK_NS, "fixed-clock")


_LATER_NS = ((25 * 60 + 1) * 60 + 1) * 10**9 + 500_000_000


def _apply_later_clock(ctx: InterventionContext) -> None:
    real_time_ns = time.time_ns
    _program_clock(ctx, lambda: real_time_ns() + _LATER_NS, None)   # silent: how runs differ, not a seeding


def _apply_one_cpu(ctx: InterventionContext) -> None:
    if not hasattr(os, "sched_setaffinity"):
        raise UsageError("intervention 'one-cpu' needs os.sched_setaffinity (Linux); it is not available here")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


INTERVENTIONS = (
    Intervention("fixed-clock", "time.time() / time.time_ns() called from the program's code return a fixed, "
                 "rising clock", "clock", _apply_clock),
    Intervention("later-clock", "time.time() / time.time_ns() called from the program's code read the clock "
                 "25 h 1 min 1.5 s later (doctor's second run of a pair)", "clock", _apply_later_clock),
    Intervention("one-cpu", "the process may use one CPU only, so thread pools start with one thread", "cpu",
                 _apply_one_cpu),
)
