"""The process's active objects: the one documented registry of twinrun's process-wide state.

- ``seeds``: the ``Seeds`` of the last ``seed_everything`` in this process (DataLoader workers started
  with spawn receive theirs from ``WorkerInit``);
- ``recorders``: the open recordings, innermost last (framework hooks and ``log_metric`` write to
  the innermost).

Modules read and change this state only through these functions, so that seeding, recording and
the framework adapters need not import each other.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .recording import Recorder
    from .seeding import Seeds

__all__ = ["current_seeds", "push_recorder", "recorder", "remove_recorder", "set_seeds"]

_lock = threading.Lock()
_seeds: Seeds | None = None
_recorders: list[Recorder] = []


def current_seeds() -> Seeds | None:
    """The active ``Seeds`` (None before the first ``seed_everything``)."""
    return _seeds


def set_seeds(seeds: Seeds | None) -> None:
    global _seeds
    _seeds = seeds


def recorder() -> Recorder | None:
    """The innermost open recorder, or None."""
    return _recorders[-1] if _recorders else None


def push_recorder(rec: Recorder) -> None:
    with _lock:
        _recorders.append(rec)


def remove_recorder(rec: Recorder) -> None:
    with _lock:
        if rec in _recorders:
            _recorders.remove(rec)
