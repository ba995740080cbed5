"""What a comparison of two traces says, as plain data: the first divergence, structural mismatches, growth."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .._display import shown
from .._format import finite_or_none, fmt_count, fmt_float
from ..trace import Event

__all__ = ["Divergence", "EventDesc", "EventStats", "Growth", "Samples", "Structural", "StructuralKind",
           "phase_words"]

# The longest layer name a sentence shows (--json keeps it whole).
NAME_LIMIT = 120

# How a sentence names where an event sits: (where, what) per phase.
_WHERE = {
    "init": ("at initialisation", "the initial value of"),
    "input": ("in the input", "the input"),
    "forward": ("in the forward pass", "the output of"),
    "loss": ("at the loss", "the loss"),
    "grad": ("in the backward pass", "the gradient of"),
    "param": ("in the optimizer step", "the updated"),
    "metric": ("in the metrics", "the metric"),
    "custom": ("in a custom event", "the custom event"),
}


def phase_words(phase: str | None) -> tuple[str, str]:
    """How a sentence names a phase: ``("in the backward pass", "the gradient of")`` for ``grad``."""
    return _WHERE.get(str(phase), (f"in {phase}", "the event"))


# --- plain results --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventStats:
    """An event's float64 stats as a comparison shows them (None: unknown or not finite)."""

    l2: float | None
    mean: float | None
    maxabs: float | None
    nonfinite: int

    @classmethod
    def of(cls, e: Event) -> EventStats:
        return cls(finite_or_none(e.l2), finite_or_none(e.mean), finite_or_none(e.maxabs), e.nonfinite)

    def to_dict(self) -> dict[str, Any]:
        return {"l2": self.l2, "mean": self.mean, "maxabs": self.maxabs, "nonfinite": self.nonfinite}


@dataclass(frozen=True)
class Samples:
    """Per-sample input digests of two events: how many samples, how many positions hold another
    sample, how many samples of A are not in B at all."""

    count: int
    moved: int
    changed: int

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "moved": self.moved, "changed": self.changed}


@dataclass
class Divergence:
    """The first event whose digest differs, and by how much (counts and ULPs need kept values)."""

    step: int
    index: int
    phase: str
    name: str
    shape: list[int]
    dtype: str
    size: int
    digest_a: str
    digest_b: str
    stats_a: EventStats
    stats_b: EventStats
    values: bool = False                     # whether both values were kept, so the numbers below are exact
    differing: int | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    max_ulp: int | None = None
    input_order_only: bool | None = None     # inputs: the same samples, in another order
    samples: Samples | None = None
    before_identical: bool = True            # every event before it was identical
    before_checked: list[str] = field(default_factory=list)   # the phases recorded before it

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "index": self.index, "phase": str(self.phase), "name": self.name,
            "shape": list(self.shape), "dtype": self.dtype, "size": self.size,
            "digest_a": self.digest_a, "digest_b": self.digest_b, "values": self.values,
            "differing": self.differing, "max_abs": self.max_abs, "max_rel": self.max_rel, "max_ulp": self.max_ulp,
            "stats_a": self.stats_a.to_dict(), "stats_b": self.stats_b.to_dict(),
            "input_order_only": self.input_order_only,
            "samples": None if self.samples is None else self.samples.to_dict(),
            "before_identical": self.before_identical, "before_checked": list(self.before_checked),
        }

    def text(self) -> str:
        """What differs, in words: counts, largest difference and ULPs, samples, non-finite values."""
        if self.input_order_only and self.samples is not None:
            return (f"the same {fmt_count(self.samples.count)} samples arrive in another order "
                    f"({fmt_count(self.samples.moved)} positions hold another sample)")
        if self.differing is not None:
            text = f"{fmt_count(self.differing)} of {fmt_count(self.size)} values differ"
            if self.max_abs is not None:
                text += f" by at most {fmt_float(self.max_abs)}"
                if self.max_ulp is not None:
                    text += f" ({fmt_count(self.max_ulp)} ULP)"
            elif self.max_ulp is not None:
                text += f" by at most {fmt_count(self.max_ulp)} ULP"
        else:
            text = (f"the {fmt_count(self.size)} values differ (l2 norm {fmt_float(self.stats_a.l2, 8)} vs "
                    f"{fmt_float(self.stats_b.l2, 8)}; values not kept)")
        if self.samples is not None and self.samples.changed:
            text += f"; {fmt_count(self.samples.changed)} of {fmt_count(self.samples.count)} samples have other content"
        if self.stats_a.nonfinite != self.stats_b.nonfinite:
            text += (f"; non-finite values: {fmt_count(self.stats_a.nonfinite)} in A, "
                     f"{fmt_count(self.stats_b.nonfinite)} in B")
        return text

    def before_text(self) -> str:
        """What was identical before it, in words (the sentence's tail)."""
        if not self.before_identical:
            return ""
        seen = set(self.before_checked)
        has_input = "input" in seen
        has_params = bool(seen & {"init", "param"})
        if self.phase == "input" and has_params:   # the input itself is where they part: it was recorded
            return "; parameters were identical up to there"
        if has_input and has_params:
            return "; inputs and parameters were identical up to there"
        if has_params:
            return "; parameters were identical up to there (inputs not recorded)"
        if has_input:
            return "; inputs were identical up to there (parameters not recorded)"
        if seen:
            return "; everything recorded before it was identical"
        return "; it is the first event recorded"

    def where(self) -> str:
        """``at step 3, in the backward pass, at the gradient of `classifier.weight```."""
        where, what = phase_words(self.phase)
        name = shown(self.name, NAME_LIMIT)   # a name from a file or a script: nothing in it acts on a terminal
        if self.phase == "loss":
            return f"at step {self.step}, at the loss `{name}`"
        return f"at step {self.step}, {where}, at {what} `{name}`"


class StructuralKind(StrEnum):
    """How two traces stop matching event for event."""

    MISSING_EVENT = "missing-event"
    OTHER_EVENT = "other-event"
    OTHER_SHAPE = "other-shape"
    OTHER_DTYPE = "other-dtype"
    NO_COMMON_STEPS = "no-common-steps"


@dataclass(frozen=True)
class EventDesc:
    """An event as a structural mismatch names it."""

    phase: str
    name: str
    dtype: str
    shape: list[int]

    @classmethod
    def of(cls, e: Event | None) -> EventDesc | None:
        return None if e is None else cls(str(e.phase), e.name, e.dtype, list(e.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def text(self) -> str:
        return f"`{shown(self.name, NAME_LIMIT)}` ({self.phase}, {shown(self.dtype, 40)}{self.shape})"


@dataclass(frozen=True)
class Structural:
    """Where two traces stop matching event for event (never a numeric divergence)."""

    kind: StructuralKind
    step: int | None
    index: int | None
    a: EventDesc | None
    b: EventDesc | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "step": self.step, "index": self.index,
                "a": None if self.a is None else self.a.to_dict(), "b": None if self.b is None else self.b.to_dict()}

    def text(self) -> str:
        if self.kind == StructuralKind.NO_COMMON_STEPS:
            return "The traces have no recorded step in common"
        what = {StructuralKind.MISSING_EVENT: "one trace has an event the other lacks",
                StructuralKind.OTHER_EVENT: "the traces record different models",
                StructuralKind.OTHER_SHAPE: "the traces record tensors of different shapes",
                StructuralKind.OTHER_DTYPE: "the traces record tensors of different dtypes"}[self.kind]
        return (f"Structural mismatch, {what}: at step {self.step}, event {self.index} is {_side(self.a)} in A "
                f"but {_side(self.b)} in B")


def _side(e: EventDesc | None) -> str:
    return "nothing" if e is None else e.text()


@dataclass(frozen=True)
class Growth:
    """One step after the first divergence: how many events differ, how far the parameters are apart."""

    step: int
    events: int
    differing: int
    param_rel_diff: float | None
    param_basis: str | None       # "values" (exact), "norms" (a lower bound), "mixed", None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "events": self.events, "differing": self.differing,
                "param_rel_diff": self.param_rel_diff, "param_basis": self.param_basis}


