"""Traces: the ordered stream of events of one run, stored in one SQLite file.

- ``events``: ``Phase``, ``Status``, ``Event``: what a trace is made of;
- ``digest``: the digest and float64-statistics kernel every recorded tensor goes through;
- ``store``: ``TraceWriter`` (crash-safe, one committed transaction per step) and ``Trace`` (the
  reader, which never executes anything from the file).

Recording a program (hooks, steps, ``twinrun.record``) is ``twinrun.recording``'s job; comparing two
traces is ``twinrun.comparison``'s.
"""

from __future__ import annotations

from .digest import RAW_DTYPES, STORAGE, as_float, digest, stats
from .events import PHASES, STATUSES, Event, Phase, Status
from .store import DEFAULT_VALUE_BUDGET, DEFAULT_VALUE_THRESHOLD, FORMAT, SCHEMA_VERSION, Trace, TraceWriter

__all__ = [
    "DEFAULT_VALUE_BUDGET",
    "DEFAULT_VALUE_THRESHOLD",
    "FORMAT",
    "PHASES",
    "RAW_DTYPES",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORAGE",
    "Event",
    "Phase",
    "Status",
    "Trace",
    "TraceWriter",
    "as_float",
    "digest",
    "stats",
]
