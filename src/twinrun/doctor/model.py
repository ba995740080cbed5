"""Doctor's plain results: the verdict, the cause, the experiments and where their runs parted."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .._display import shown
from ..comparison import Comparison, Divergence, phase_words

__all__ = ["CAUSES", "Act", "Cause", "Diagnosis", "Experiment", "Verdict", "Where", "where_words"]


class Verdict(StrEnum):
    REPRODUCIBLE = "reproducible"
    NOT_REPRODUCIBLE = "not-reproducible"


class Cause(StrEnum):
    """DESIGN.md's causes (thread count and CPU ISA are portability findings of a reproducible run)."""

    REPRODUCIBLE = "reproducible"
    UNSEEDED_INIT = "unseeded-init"
    DATA_PIPELINE = "data-pipeline"
    HASH_SEED = "hash-seed"
    NONDETERMINISTIC_KERNEL = "nondeterministic-kernel"
    ENVIRONMENT = "environment"
    REPLICA_DIVERGENCE = "replica-divergence"   # --nproc: the ranks of one run hold other parameters
    UNKNOWN = "unknown"


CAUSES = tuple(str(c) for c in Cause)


@dataclass(frozen=True)
class Where:
    """Where two runs first parted, as doctor reasons about it (from a ``Comparison``)."""

    step: int | None
    phase: str | None
    name: str | None
    structural: bool = False
    kind: str | None = None                  # the structural mismatch's kind
    shape: list[int] | None = None
    differing: int | None = None
    max_abs: float | None = None
    max_ulp: int | None = None
    before_identical: bool | None = None
    input_order_only: bool | None = None
    samples: dict[str, int] | None = None

    @classmethod
    def of(cls, c: Comparison) -> Where | None:
        d = c.first_divergence
        if isinstance(d, Divergence):
            return cls(d.step, str(d.phase), d.name, shape=list(d.shape), differing=d.differing, max_abs=d.max_abs,
                       max_ulp=d.max_ulp, before_identical=d.before_identical, input_order_only=d.input_order_only,
                       samples=None if d.samples is None else d.samples.to_dict())
        if c.structural:
            s = c.structural[0]
            side = s.a or s.b
            return cls(s.step, side.phase if side else None, side.name if side else None, structural=True,
                       kind=str(s.kind))
        return None

    def words(self) -> str:
        """``at step 0, in the backward pass (`classifier.weight`)``; what is unknown is left out."""
        parts = [f"at step {self.step}" if self.step is not None else "",
                 phase_words(self.phase)[0] if self.phase else ""]
        text = ", ".join(p for p in parts if p) or "somewhere in the run"
        return text + (f" (`{shown(self.name, 120)}`)" if self.name else "")

    def short(self) -> dict[str, Any]:
        return {"step": self.step, "phase": self.phase, "name": self.name, "structural": self.structural}

    def to_dict(self) -> dict[str, Any]:
        if self.structural:
            return {**self.short(), "kind": self.kind}
        return {**self.short(), "shape": self.shape, "differing": self.differing, "max_abs": self.max_abs,
                "max_ulp": self.max_ulp, "before_identical": self.before_identical,
                "input_order_only": self.input_order_only, "samples": self.samples}


def where_words(where: Where | None) -> str:
    return where.words() if where is not None else "somewhere"


@dataclass(frozen=True)
class Act:
    """An intervention acting at a call site of the program, as the run reported it."""

    name: str       # the intervention: seed-numpy, fixed-clock, ...
    what: str       # what it found: "numpy.random.default_rng() without a seed"
    api: str        # the call to fix: "numpy.random.default_rng()"
    site: str       # file:line in the user's program
    kind: str = ""          # an observed draw's: order, content, seed (a seed from the OS), init (implicit)
    direct: bool = True     # the program called the API itself (not a library on its behalf)
    outer: str | None = None   # the script's top-level statement that led to the draw
    via: str | None = None     # the library function the program called there (when not direct)
    # The library object that drew a seed of its own because it was built without one (a Keras
    # initialiser given by name), by its public class name, and the parameter left out (``seed``).
    built: str | None = None
    unseeded: str | None = None

    @classmethod
    def of(cls, report: dict[str, Any]) -> Act:
        def text(key: str) -> str | None:
            return None if report.get(key) is None else str(report[key])

        return cls(str(report.get("name")), str(report.get("what")), str(report.get("api") or report.get("what")),
                   str(report.get("site")), str(report.get("draw") or ""), bool(report.get("direct", True)),
                   text("outer"), text("via"), text("built"), text("unseeded"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "what": self.what, "api": self.api, "site": self.site, "kind": self.kind,
                "direct": self.direct, "outer": self.outer, "via": self.via, "built": self.built,
                "unseeded": self.unseeded}

    @property
    def called(self) -> str | None:
        """The library call of the program's line, when it is not the object built without a seed."""
        if self.via and self.built and self.via.rsplit(".", 1)[-1] == self.built.rsplit(".", 1)[-1]:
            return None
        return self.via

    @property
    def shown_api(self) -> str:
        """The API as the user wrote it: the library call of the line, with the draw it made inside (and
        the object that drew because it was built without a seed: ``Dense → GlorotUniform``)."""
        if self.built and self.unseeded:
            made = f"{self.called} → {self.built}" if self.called else self.built
            return f"{made} (no {self.unseeded}; {self.api})"
        if self.via and not self.direct and self.kind != "init":
            return f"{self.via} ({self.api})"
        return self.api


@dataclass
class Experiment:
    """One experiment: what was changed, its runs, and whether they were identical (and where they part)."""

    name: str
    changed: str
    identical: bool | None = None
    first_divergence: Where | None = None
    compared_with: str = "its own second run"
    runs: int = 0
    seconds: float = 0.0
    acted: list[Act] = field(default_factory=list)   # what the interventions changed, and where
    traces: list[str] = field(default_factory=list)
    note: str | None = None
    rank: int | None = None        # --nproc: the rank whose runs part first (rank k against rank k)
    steps: list[int] = field(default_factory=list)   # steps each run actually recorded

    def fill(self, c: Comparison) -> None:
        """Take the result of comparing this experiment's runs."""
        self.identical = bool(c.identical)
        self.first_divergence = None if c.identical else Where.of(c)
        if not c.identical:
            self.note = c.sentence()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "changed": self.changed, "identical": self.identical,
                "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
                "compared_with": self.compared_with, "runs": self.runs, "seconds": self.seconds,
                "acted": [a.to_dict() for a in self.acted], "traces": list(self.traces), "note": self.note,
                "rank": self.rank, "steps": list(self.steps)}


@dataclass
class Diagnosis:
    """What doctor found. ``to_dict()`` is the ``--json`` document."""

    script: str
    verdict: Verdict
    cause: Cause
    detail: str | None
    first_divergence: Where | None
    fix: str
    evidence: list[Experiment]
    portability: dict[str, Any] | None
    confirmed: bool
    summary: str
    reruns: int = 0
    seconds: float = 0.0
    max_steps: int = 20
    against: str | None = None
    environment: list[dict[str, Any]] | None = None
    steps: int | None = None                            # steps the baseline runs actually recorded
    source: dict[str, Any] | None = None                # the call site that matters: api, site, kind, edit
    samples: dict[str, Any] | None = None               # order or content from the pooled per-sample digests
    nproc: int | None = None                            # the ranks each run had (--nproc)
    replicas: dict[str, Any] | None = None              # --nproc: the replica check of a baseline run
    census: dict[str, Any] | None = None                # the ops that part run to run (doctor/census.py)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == Verdict.REPRODUCIBLE else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict), "cause": str(self.cause), "detail": self.detail,
            "first_divergence": None if self.first_divergence is None else self.first_divergence.short(),
            "fix": self.fix, "evidence": [e.to_dict() for e in self.evidence], "portability": self.portability,
            "confirmed": self.confirmed, "summary": self.summary, "script": self.script,
            "max_steps": self.max_steps, "reruns": self.reruns, "seconds": round(self.seconds, 2),
            "against": self.against, "environment": self.environment, "nproc": self.nproc,
            "replicas": self.replicas, "steps": self.steps, "source": self.source, "samples": self.samples,
            "census": self.census,
        }
