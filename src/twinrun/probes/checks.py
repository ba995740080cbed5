"""The in-process checks (``repeat``, ``batch_invariance``, ``threads``) on anything that can compute
rows of one batch: a ``Runner``. ``twinrun.probe(fn, batch)`` and the child of ``twinrun probe
SCRIPT`` both use them; the checks that need fresh processes are compared in ``session.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import UsageError
from .bits import LayerOutputs, Leaf, compare_leaves, first_layer

__all__ = ["CHECKS", "CheckResult", "Runner", "run_checks", "sub_batch_sizes", "verdict"]

CHECKS = ("repeat", "batch_invariance", "threads", "isa")


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``stable`` is None when the check did not run, with ``note`` saying why.

    ``ulp_per_row[i]``: the largest ULP distance over row ``i``'s output elements between the
    original call and the check's recomputation (of the worst setting); ``setting`` says which
    recomputation that is ("each row alone", "1 thread", an environment variable)."""

    stable: bool | None
    max_ulp: int | None = None
    first_layer: str | None = None
    rows_differing: int | None = None
    note: str | None = None
    ulp_per_row: list[float] | None = None
    setting: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stable": self.stable, "max_ulp": self.max_ulp, "first_layer": self.first_layer,
                               "rows_differing": self.rows_differing, "note": self.note, "setting": self.setting}
        if self.ulp_per_row is not None:
            out["ulp_per_row"] = [int(v) if v == v and v not in (float("inf"), float("-inf")) else v
                                  for v in self.ulp_per_row]
        if self.details:
            out["details"] = self.details
        return out

    def worse_than(self, other: CheckResult | None) -> bool:
        """Whether this verdict should stand for a check over ``other`` (unstable beats stable beats
        not run; between two unstable ones the larger distance, a NaN on one side the largest)."""
        if other is None:
            return True
        rank = {False: 2, True: 1, None: 0}
        if rank[self.stable] != rank[other.stable]:
            return rank[self.stable] > rank[other.stable]
        if self.stable is False:
            mine = float("inf") if self.max_ulp is None else self.max_ulp
            theirs = float("inf") if other.max_ulp is None else other.max_ulp
            return mine > theirs
        return False


class Runner:
    """Computes rows ``[start, stop)`` of one batch: (output leaves, layer outputs). ``layers_note`` is
    said with an unstable result when no layer can be named (None: layers are recorded)."""

    framework = "callable"
    layers_note: str | None = "layer names need a PyTorch module; this names none"
    training = False

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def run(self, start: int, stop: int) -> tuple[list[Leaf], LayerOutputs]:
        raise NotImplementedError

    def threads(self) -> int | None:
        """The framework's thread count now, when it can be changed for one call (else None)."""
        return None

    def run_with_threads(self, n: int) -> tuple[list[Leaf], LayerOutputs]:
        raise NotImplementedError

    def kept(self) -> contextlib.AbstractContextManager[Any]:
        """A block after which the framework's global state the probe's calls change (its RNG) is
        as before."""
        return contextlib.nullcontext()


def verdict(ref: list[Leaf], out: list[Leaf], ref_layers: LayerOutputs, layers: LayerOutputs, *,
            layers_note: str | None, setting: str | None = None, details: dict[str, Any] | None = None,
            training: bool = False) -> CheckResult:
    """Compare a recomputation with the original call: the verdict, the first differing layer."""
    cmp = compare_leaves(ref, out)
    if cmp.identical:
        return CheckResult(stable=True, max_ulp=0, rows_differing=0, ulp_per_row=cmp.ulp_per_row,
                           setting=setting, details=details or {})
    layer = first_layer(ref_layers, layers) if ref_layers else None
    notes = []
    if layers_note:
        notes.append(layers_note)
    elif ref_layers and layer is None:
        notes.append("no submodule's output differs: the rows part in the root module's own code")
    if cmp.max_ulp is None:
        notes.append("a NaN on one side only: no ULP distance")
    if training:
        notes.append("the model is in training mode (dropout, batch statistics): call model.eval() for inference")
    return CheckResult(stable=False, max_ulp=cmp.max_ulp, first_layer=layer, rows_differing=cmp.rows_differing,
                       note="; ".join(notes) or None, ulp_per_row=cmp.ulp_per_row, setting=setting,
                       details=details or {})


def sub_batch_sizes(rows: int) -> list[int]:
    """1 (each row alone), 3 (an odd size that leaves a ragged tail) and half the batch."""
    return [k for k in dict.fromkeys([1, 3, rows // 2]) if 1 <= k < rows]


def _concat(parts: list[list[Leaf]]) -> list[Leaf]:
    import numpy as np

    return [Leaf(np.concatenate([p[i].values for p in parts]), parts[0][i].kind) for i in range(len(parts[0]))]


def _concat_layers(parts: list[LayerOutputs], sizes: list[int]) -> LayerOutputs:
    """Layer outputs of consecutive sub-batches joined along the batch dimension (layers whose
    outputs are not batch-first in every part are left out)."""
    out: LayerOutputs = []
    for i, (name, leaves) in enumerate(parts[0]):
        if not all(len(p) > i and p[i][0] == name and len(p[i][1]) == len(leaves) for p in parts):
            break
        if not all(leaf.values.ndim and leaf.values.shape[0] == n for p, n in zip(parts, sizes) for leaf in p[i][1]):
            continue
        out.append((name, _concat([p[i][1] for p in parts])))
    return out


def _setting(k: int, rows: int) -> str:
    return f"{rows} rows, each computed alone" if k == 1 else f"{rows} rows in sub-batches of {k}"


def batch_invariance(runner: Runner, ref: list[Leaf], ref_layers: LayerOutputs,
                     sizes: Sequence[int] | None = None) -> CheckResult:
    rows = runner.rows
    if rows < 2:
        return CheckResult(stable=None, note="a batch of one row has no sub-batches: probe a batch of 2 rows or more")
    sizes = list(sizes) if sizes is not None else sub_batch_sizes(rows)
    if any(not isinstance(k, int) or not 1 <= k < rows for k in sizes):
        raise UsageError(f"probe: sub-batch sizes must be whole numbers from 1 to {rows - 1}, got {list(sizes)}")
    worst: CheckResult | None = None
    per_size: dict[str, Any] = {}
    for k in sizes:
        parts, layer_parts, part_rows = [], [], []
        for start in range(0, rows, k):
            stop = min(rows, start + k)
            out, layers = runner.run(start, stop)
            parts.append(out)
            layer_parts.append(layers)
            part_rows.append(stop - start)
        joined_layers = _concat_layers(layer_parts, part_rows) if ref_layers else []
        v = verdict(ref, _concat(parts), ref_layers, joined_layers, layers_note=runner.layers_note,
                    setting=_setting(k, rows), training=runner.training)
        per_size[str(k)] = {"stable": v.stable, "max_ulp": v.max_ulp, "first_layer": v.first_layer}
        if v.worse_than(worst):
            worst = v
    assert worst is not None
    return CheckResult(stable=worst.stable, max_ulp=worst.max_ulp, first_layer=worst.first_layer,
                       rows_differing=worst.rows_differing, note=worst.note, ulp_per_row=worst.ulp_per_row,
                       setting=worst.setting, details={"sub_batches": per_size})


def threads_in_process(runner: Runner, ref: list[Leaf], ref_layers: LayerOutputs) -> CheckResult:
    now = runner.threads()
    if now is None:
        return CheckResult(stable=None, note=f"the thread count of a {runner.framework} function cannot be "
                                              "changed for one call in this process: run `twinrun probe SCRIPT` "
                                              "(fresh processes)")
    other = 1 if now > 1 else 2
    out, layers = runner.run_with_threads(other)
    return verdict(ref, out, ref_layers, layers, layers_note=runner.layers_note,
                   setting=f"{other} thread{'s' if other > 1 else ''} against {now}",
                   details={"threads": [now, other]}, training=runner.training)


ISA_NOTE = "needs fresh processes with a lower instruction set: run `twinrun probe SCRIPT`"


def run_checks(runner: Runner, checks: Sequence[str], ref: list[Leaf], ref_layers: LayerOutputs,
               sub_batches: Sequence[int] | None = None) -> dict[str, CheckResult]:
    """The in-process checks of ``checks`` against the original call ``ref`` (and its layers);
    ``threads`` and ``isa`` are left to the caller when it runs them in fresh processes."""
    results: dict[str, CheckResult] = {}
    for name in checks:
        if name == "repeat":
            out, layers = runner.run(0, runner.rows)
            results[name] = verdict(ref, out, ref_layers, layers, layers_note=runner.layers_note,
                                    setting="the same call again", training=runner.training)
        elif name == "batch_invariance":
            results[name] = batch_invariance(runner, ref, ref_layers, sub_batches)
        elif name == "threads":
            results[name] = threads_in_process(runner, ref, ref_layers)
        elif name == "isa":
            results[name] = CheckResult(stable=None, note=ISA_NOTE)
    return results


def check_names(checks: str | Sequence[str]) -> tuple[str, ...]:
    """``"repeat,threads"`` or a sequence -> the checks in the order asked, or a one-line UsageError."""
    items = [c.strip() for c in (checks.split(",") if isinstance(checks, str) else checks) if c and c.strip()]
    unknown = [c for c in items if c not in CHECKS]
    if unknown:
        raise UsageError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    if not items:
        raise UsageError(f"name at least one check of {', '.join(CHECKS)}")
    return tuple(dict.fromkeys(items))
