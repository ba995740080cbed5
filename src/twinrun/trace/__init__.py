"""Traces: the ordered stream of events of one run, stored in one SQLite file.

- ``events``: ``Phase``, ``Status``, ``Event``: what a trace is made of;
- ``digest``: the digest and float64-statistics kernel every recorded tensor goes through;
- ``schema``: the file's tables by schema version (2 written, 1 and 2 read) and the encodings writer
  and reader share (a step's packed small events, the step summary);
- ``batch``: the open step of a recording in memory (small float32 tensors finished all at once);
- ``writer``: ``TraceWriter`` (crash-safe, one committed transaction per step);
- ``store``: ``Trace``, the reader, which never executes anything from the file.

Recording a program (hooks, steps, ``twinrun.record``) is ``twinrun.recording``'s job; comparing two
traces is ``twinrun.comparison``'s.
"""

from __future__ import annotations

from .digest import RAW_DTYPES, STORAGE, as_float, digest, stats
from .events import PHASES, STATUSES, Event, Phase, Status
from .schema import FORMAT, SCHEMA_VERSION
from .store import Trace
from .writer import DEFAULT_VALUE_BUDGET, DEFAULT_VALUE_THRESHOLD, TraceWriter

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
