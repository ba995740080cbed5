"""What a trace is made of: phases, statuses and events.

>>> Phase("grad") is Phase.GRAD, Phase.GRAD == "grad"
(True, True)
>>> [str(p) for p in Phase][:3]
['init', 'input', 'forward']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["PHASES", "STATUSES", "Event", "Phase", "Status"]


class Phase(StrEnum):
    """Where in a training step an event was recorded (DESIGN.md's trace contract), in program order."""

    INIT = "init"
    INPUT = "input"
    FORWARD = "forward"
    LOSS = "loss"
    GRAD = "grad"
    PARAM = "param"
    METRIC = "metric"
    CUSTOM = "custom"


class Status(StrEnum):
    """How the recorded run ended: ``running`` in a file means it was cut off (killed)."""

    COMPLETE = "complete"
    STOPPED = "stopped"
    FAILED = "failed"
    DIVERGED = "diverged"
    RUNNING = "running"


PHASES: tuple[Phase, ...] = tuple(Phase)
STATUSES: tuple[Status, ...] = tuple(Status)


@dataclass(frozen=True)
class Event:
    """One recorded tensor: where it sits in the run, what it was (digest), and its stats."""

    step: int
    index: int
    phase: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str
    l2: float
    mean: float
    maxabs: float
    nonfinite: int
    has_value: bool = False
    sample_digests: list[str] | None = None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def same_kind(self, other: Event) -> bool:
        """Same phase, name, dtype and shape: two events that can be compared number by number."""
        return (self.phase, self.name, self.dtype, self.shape) == (other.phase, other.name, other.dtype, other.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "index": self.index, "phase": str(self.phase), "name": self.name,
            "dtype": self.dtype, "shape": list(self.shape), "digest": self.digest,
            "l2": _num(self.l2), "mean": _num(self.mean), "maxabs": _num(self.maxabs),
            "nonfinite": self.nonfinite, "has_value": self.has_value,
            "sample_digests": self.sample_digests,
        }


def _num(x: float | None) -> float | None:
    # SQLite stores NaN as NULL, and a value that was never computed is None: both read as "unknown".
    return None if x is None or math.isnan(x) else x
