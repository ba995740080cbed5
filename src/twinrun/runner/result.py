"""What one run of a script under twinrun gave: the one result type of ``run``, ``check``, ``doctor``, ``sweep``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """One run: its exit code, its trace and status, how many steps it recorded, how long it took.

    ``status`` is the trace's status (``complete``, ``stopped``, ``diverged``, ``failed``, ``running``
    for a killed run), ``missing`` when no readable trace was written, ``timeout`` when the run was
    killed after its time limit. ``divergence`` is the live comparison's first divergence (``--against``);
    ``reports`` what the child reported through ``twinrun._channel`` (interventions that acted).
    ``stdout``/``stderr`` are the child's output (a run in a fresh process).

    A run of N ranks (``--nproc``) has one result per rank in ``ranks`` (each with its ``rank`` and
    trace); the run's own exit code and status are the worst rank's, its ``trace_path`` rank 0's.
    """

    exit_code: int
    trace_path: str
    status: str
    steps: int = 0
    seconds: float = 0.0
    error: str | None = None              # "ExcType: message" when the script raised
    stop_reason: str | None = None        # "max-steps" or "diverged"
    divergence: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)   # hooks that fired (trace meta "seen")
    notes: list[str] = field(default_factory=list)      # what the user should know about how it ran
    rank: int | None = None                             # this result's rank, in a run of N ranks
    ranks: list[RunResult] = field(default_factory=list)   # a run of N ranks: one result per rank

    @property
    def trace_paths(self) -> list[str]:
        """Every trace the run wrote: one per rank, or the one."""
        return [r.trace_path for r in self.ranks] if self.ranks else [self.trace_path]

    @property
    def stepless(self) -> bool:
        """The script ran to its end (or was stopped) without completing one step twinrun could see."""
        return self.exit_code in (0, 1) and self.status in ("complete", "stopped") and self.steps == 0

    def no_step_reason(self) -> str:
        from ..recording import no_step_reason

        return no_step_reason(self.seen)

    def acts(self, kind: str = "intervention") -> list[dict[str, Any]]:
        """The reports of one kind (default: the interventions that acted), in order."""
        return [r for r in self.reports if r.get("kind") == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "trace_path": self.trace_path, "status": self.status,
                "steps": self.steps, "seconds": round(self.seconds, 3), "error": self.error,
                "stop_reason": self.stop_reason, "divergence": self.divergence, "reports": list(self.reports),
                "seen": dict(self.seen), "notes": list(self.notes), "rank": self.rank,
                "ranks": [r.to_dict() for r in self.ranks]}
