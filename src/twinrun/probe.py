"""Inference probes: does a model give each input row the same bits on a second call, inside
batches of other sizes, and with another thread count?

>>> report = probe(model, batch)                                 # doctest: +SKIP
>>> report.to_dict()["checks"]["batch_invariance"]               # doctest: +SKIP
{'stable': False, 'max_ulp': 3, 'first_layer': '0', 'rows_differing': 64, 'note': None}

``fn`` is a PyTorch module or any callable taking the batch: a Keras model, a JAX function, a
NumPy function. ``batch`` is an array or tensor (``fn(batch)``), a tuple or list (``fn(*batch)``)
or a dict (``fn(**batch)``) whose arrays share their first dimension, the batch dimension. Outputs
may be arrays, tensors or nests of them (tuples, lists, dicts); every leaf whose first dimension is
the batch is compared row by row, bit for bit. Keras and JAX outputs are read through NumPy.

The checks:

- ``repeat``: the same call twice gives the same bits.
- ``batch_invariance``: each row computed alone, and in sub-batches of other sizes, equals the same
  row inside the whole batch.
- ``threads``: one thread against the current thread count (PyTorch only: TensorFlow and JAX fix
  their thread pools at start-up, so for them this needs fresh processes).
- ``isa``: lower CPU instruction sets need fresh processes with other environment variables; this
  in-process API leaves it unrun (``stable`` None) with a note to run ``twinrun probe SCRIPT``.

For a PyTorch module, forward hooks on its submodules (only during the probe) name the first
submodule, in the order their outputs are produced, whose output rows part: ``first_layer``.
``max_ulp`` is the largest distance at the output, in units in the last place of its dtype.
Everything runs under ``torch.no_grad()``; the model's train/eval mode is left as it is.

The building blocks (``row_ulps``, ``compare_leaves``, ``first_layer``, ``CheckResult``) are also
what ``twinrun probe SCRIPT`` uses to compare recordings made in other processes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import UsageError

__all__ = [
    "CHECKS",
    "CheckResult",
    "LayerOutputs",
    "Leaf",
    "ProbeReport",
    "compare_leaves",
    "first_layer",
    "load_outputs",
    "probe",
    "row_ulps",
    "save_outputs",
]

CHECKS = ("repeat", "batch_invariance", "threads", "isa")
ISA_NOTE = "needs fresh processes with a lower instruction set: run `twinrun probe SCRIPT`"


@dataclass(frozen=True)
class Leaf:
    """One output array, kept as bits: ``kind`` "float" (``values`` is the unsigned-integer view of
    the floats, any width) or "int" (``values`` as int64), first dimension the batch."""

    values: np.ndarray
    kind: str


# (name of the layer, with "#k" for its k-th call when it runs more than once; its output leaves)
LayerOutputs = list[tuple[str, list[Leaf]]]


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``stable`` is None when the check did not run, with ``note`` saying why."""

    stable: bool | None
    max_ulp: int | None = None
    first_layer: str | None = None
    rows_differing: int | None = None
    note: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stable": self.stable, "max_ulp": self.max_ulp, "first_layer": self.first_layer,
                               "rows_differing": self.rows_differing, "note": self.note}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class ProbeReport:
    """The checks' results, in the order asked, and what was probed."""

    checks: dict[str, CheckResult]
    framework: str
    batch_size: int
    threads: int | None = None

    @property
    def stable(self) -> bool | None:
        """True when every check that ran is stable, False when one is not, None when none ran."""
        ran = [c.stable for c in self.checks.values() if c.stable is not None]
        return all(ran) if ran else None

    def to_dict(self) -> dict[str, Any]:
        return {"checks": {name: c.to_dict() for name, c in self.checks.items()},
                "stable": self.stable, "framework": self.framework, "batch_size": self.batch_size,
                "threads": self.threads}


# --- comparing bits -------------------------------------------------------------------------------

def as_leaf(x: Any) -> Leaf | None:
    """A NumPy-readable array as a Leaf (None for what is not a numeric array)."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        return Leaf(np.ascontiguousarray(arr).view(f"u{arr.dtype.itemsize}"), "float")
    if arr.dtype.kind in "iub":
        return Leaf(arr.astype(np.int64), "int")
    return None


def _ordered(bits: np.ndarray) -> np.ndarray:
    """Unsigned keys that sort like the floats whose bits they are (-0.0 and +0.0 one apart)."""
    width = bits.dtype.itemsize * 8
    sign = np.array(1 << (width - 1), dtype=bits.dtype)
    return np.where(bits & sign, ~bits, bits | sign)


def row_ulps(a: Leaf, b: Leaf) -> np.ndarray:
    """Per row (first dimension), the largest distance between ``a`` and ``b``: units in the last
    place for floats (NaN against NaN counts 0), plain differences for integers. float64 rows."""
    if a.values.shape != b.values.shape or a.kind != b.kind or a.values.dtype != b.values.dtype:
        raise UsageError(f"cannot compare outputs of shapes {a.values.shape} and {b.values.shape} "
                         f"({a.values.dtype}, {b.values.dtype}): the calls returned different structures")
    rows = a.values.shape[0] if a.values.ndim else 1
    if a.kind == "int":
        diff = np.abs(a.values - b.values).astype(np.float64)
    else:
        ka, kb = _ordered(a.values), _ordered(b.values)
        diff = np.where(ka > kb, ka - kb, kb - ka).astype(np.float64)
        width = a.values.dtype.itemsize * 8
        exp_mask = {16: 0x7C00, 32: 0x7F800000, 64: 0x7FF0000000000000}
        # bfloat16 arrives as float32 bits; its own 16-bit pattern is not told apart here
        mask = np.array(exp_mask[width], dtype=a.values.dtype)
        frac = ~mask & ~np.array(1 << (width - 1), dtype=a.values.dtype)
        nan_a = ((a.values & mask) == mask) & ((a.values & frac) != 0)
        nan_b = ((b.values & mask) == mask) & ((b.values & frac) != 0)
        diff = np.where(nan_a & nan_b, 0.0, np.where(nan_a | nan_b, np.inf, diff))
    return diff.reshape(rows, -1).max(axis=1) if diff.size else np.zeros(rows)


def compare_leaves(a: Sequence[Leaf], b: Sequence[Leaf]) -> tuple[bool, int | None, int]:
    """``(identical bits, largest ULP distance, rows that differ)`` of two outputs."""
    if len(a) != len(b):
        raise UsageError(f"the calls returned {len(a)} and {len(b)} arrays: the outputs are not comparable")
    identical = all(x.values.shape == y.values.shape and np.array_equal(x.values, y.values) for x, y in zip(a, b))
    if identical:
        return True, 0, 0
    per_row = np.max([row_ulps(x, y) for x, y in zip(a, b)], axis=0)
    worst = float(per_row.max()) if per_row.size else 0.0
    return False, (int(worst) if np.isfinite(worst) else None), int((per_row > 0).sum())


def first_layer(a: LayerOutputs, b: LayerOutputs) -> str | None:
    """The first layer, in ``a``'s order, whose output bits differ in ``b`` (layers missing from
    ``b`` or of another shape are skipped: they cannot be compared)."""
    other = dict(b)
    for name, leaves in a:
        theirs = other.get(name)
        if theirs is None or len(theirs) != len(leaves):
            continue
        if any(x.values.shape == y.values.shape and not np.array_equal(x.values, y.values)
               for x, y in zip(leaves, theirs)):
            return name
    return None


# --- recordings in files (the CLI compares calls made in other processes) -----------------------

def save_outputs(path: str, outputs: Sequence[Leaf], layers: LayerOutputs) -> None:
    """Write one call's output leaves and layer outputs to an ``.npz`` file (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for i, leaf in enumerate(outputs):
        arrays[f"out/{i}/{leaf.kind}"] = leaf.values
    for i, (name, leaves) in enumerate(layers):
        for j, leaf in enumerate(leaves):
            arrays[f"layer/{i}/{j}/{leaf.kind}/{name}"] = leaf.values
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds like allow_pickle


def load_outputs(path: str) -> tuple[list[Leaf], LayerOutputs]:
    """Read what ``save_outputs`` wrote. Never unpickles: object arrays are refused."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a probe recording ({exc}); record it again with twinrun probe") from None
    outputs: dict[int, Leaf] = {}
    layers: dict[int, tuple[str, dict[int, Leaf]]] = {}
    with data:
        for key in data.files:
            parts = key.split("/", 4)
            if parts[0] == "out" and len(parts) == 3:
                outputs[int(parts[1])] = Leaf(data[key], parts[2])
            elif parts[0] == "layer" and len(parts) == 5:
                entry = layers.setdefault(int(parts[1]), (parts[4], {}))
                entry[1][int(parts[2])] = Leaf(data[key], parts[3])
            else:
                raise UsageError(f"{path}: unexpected entry {key!r}: not a probe recording")
    return ([outputs[i] for i in sorted(outputs)],
            [(layers[i][0], [layers[i][1][j] for j in sorted(layers[i][1])]) for i in sorted(layers)])


# --- batches ----------------------------------------------------------------------------------------

def _batch_size(batch: Any) -> int:
    leaves = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (tuple, list)) else [batch]
    sizes = {int(leaf.shape[0]) for leaf in leaves if hasattr(leaf, "shape") and len(leaf.shape) > 0}
    if len(sizes) != 1:
        raise UsageError("probe: the batch must be an array or tensor (or a tuple, list or dict of them) "
                         f"whose first dimensions agree; found first dimensions {sorted(sizes) or 'none'}")
    return sizes.pop()


def _slice(batch: Any, start: int, stop: int) -> Any:
    def cut(x: Any) -> Any:
        return x[start:stop] if hasattr(x, "shape") and len(x.shape) > 0 else x
    if isinstance(batch, dict):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cut(v) for v in batch)
    return cut(batch)


def call(fn: Callable[..., Any], batch: Any) -> Any:
    """``fn(batch)``, ``fn(*batch)`` for a tuple or list, ``fn(**batch)`` for a dict."""
    if isinstance(batch, dict):
        return fn(**batch)
    if isinstance(batch, (tuple, list)):
        return fn(*batch)
    return fn(batch)


def _leaves(out: Any, rows: int) -> list[Leaf]:
    """The output's arrays whose first dimension is the batch, in a fixed order."""
    found: list[Leaf] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)
        elif hasattr(x, "shape") and len(x.shape) > 0 and int(x.shape[0]) == rows:
            leaf = as_leaf(x)
            if leaf is not None:
                found.append(leaf)
    walk(out)
    return found


def _concat(parts: list[list[Leaf]]) -> list[Leaf]:
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


# --- the probe ---------------------------------------------------------------------------------------

class _Runner:
    """How to run one framework's function: calls returning (output leaves, layer outputs)."""

    framework = "callable"
    # Said with an unstable result when no layer can be named (None: layers are recorded).
    layers_note: str | None = "layer names need a PyTorch module; this names none"

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def run(self, batch: Any, rows: int) -> tuple[list[Leaf], LayerOutputs]:
        return _leaves(call(self.fn, batch), rows), []

    def threads(self) -> int | None:
        return None

    def with_threads(self, n: int, batch: Any, rows: int) -> tuple[list[Leaf], LayerOutputs] | None:
        return None


_FRAMEWORK_OF_MODULE = {"keras": "keras", "tf_keras": "keras", "tensorflow": "tensorflow",
                        "jax": "jax", "jaxlib": "jax", "flax": "jax"}


def _runner(fn: Callable[..., Any], batch: Any) -> _Runner:
    torch = sys.modules.get("torch")
    if torch is not None and (isinstance(fn, torch.nn.Module) or _has_tensor(batch, torch.Tensor)):
        from .frameworks.torch_probe import TorchRunner
        return TorchRunner(fn)
    runner = _Runner(fn)
    # only a label for the report: where the callable (or its class) comes from
    for mod in (type(fn).__module__, getattr(fn, "__module__", None) or ""):
        top = mod.split(".")[0]
        if top in _FRAMEWORK_OF_MODULE:
            runner.framework = _FRAMEWORK_OF_MODULE[top]
            break
    else:
        runner.framework = "callable"
    return runner


def _has_tensor(batch: Any, kind: type) -> bool:
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else [batch]
    return any(isinstance(x, kind) for x in items)


def _sub_batch_sizes(rows: int) -> list[int]:
    """1 (each row alone), 3 (an odd size that leaves a ragged tail) and half the batch."""
    return [k for k in dict.fromkeys([1, 3, rows // 2]) if 1 <= k < rows]


def probe(fn: Callable[..., Any], batch: Any, *, checks: Sequence[str] = ("repeat", "batch_invariance", "threads"),
          sub_batches: Sequence[int] | None = None) -> ProbeReport:
    """Run ``fn`` on ``batch`` and check that its output rows repeat bit for bit (see the module doc).

    ``sub_batches``: the sub-batch sizes for ``batch_invariance`` (default: 1, 3 and half the batch).
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise UsageError(f"probe: unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}" if unknown
                         else f"probe: name at least one check of {', '.join(CHECKS)}")
    if not callable(fn):
        raise UsageError(f"probe: {type(fn).__name__} is not callable; pass a model or a function of the batch")
    rows = _batch_size(batch)
    runner = _runner(fn, batch)
    ref, ref_layers = runner.run(batch, rows)
    if not ref:
        raise UsageError(f"probe: the output has no numeric array whose first dimension is the batch ({rows}); "
                         "return the model's outputs for the batch")
    results: dict[str, CheckResult] = {}
    for name in checks:
        if name == "repeat":
            out, layers = runner.run(batch, rows)
            results[name] = _verdict(runner, ref, out, ref_layers, layers)
        elif name == "batch_invariance":
            results[name] = _batch_invariance(runner, batch, rows, ref, ref_layers, sub_batches)
        elif name == "threads":
            results[name] = _threads(runner, batch, rows, ref, ref_layers)
        else:
            results[name] = CheckResult(stable=None, note=ISA_NOTE)
    return ProbeReport(checks=results, framework=runner.framework, batch_size=rows, threads=runner.threads())


def _verdict(runner: _Runner, ref: list[Leaf], out: list[Leaf], ref_layers: LayerOutputs, layers: LayerOutputs,
             details: dict[str, Any] | None = None) -> CheckResult:
    same, ulp, rows = compare_leaves(ref, out)
    if same:
        return CheckResult(stable=True, max_ulp=0, rows_differing=0, details=details or {})
    layer = first_layer(ref_layers, layers) if ref_layers else None
    note = None
    if runner.layers_note:
        note = runner.layers_note
    elif ref_layers and layer is None:
        note = "no submodule's output differs: the rows part in the root module's own code"
    elif ulp is None:
        note = "a NaN on one side only: no ULP distance"
    return CheckResult(stable=False, max_ulp=ulp, first_layer=layer, rows_differing=rows, note=note,
                       details=details or {})


def _batch_invariance(runner: _Runner, batch: Any, rows: int, ref: list[Leaf], ref_layers: LayerOutputs,
                      sizes: Sequence[int] | None) -> CheckResult:
    if rows < 2:
        return CheckResult(stable=None, note="a batch of one row has no sub-batches: probe a batch of 2 rows or more")
    sizes = list(sizes) if sizes is not None else _sub_batch_sizes(rows)
    if any(not isinstance(k, int) or not 1 <= k < rows for k in sizes):
        raise UsageError(f"probe: sub-batch sizes must be whole numbers from 1 to {rows - 1}, got {list(sizes)}")
    worst: CheckResult | None = None
    per_size: dict[str, Any] = {}
    for k in sizes:
        parts, layer_parts, part_rows = [], [], []
        for start in range(0, rows, k):
            stop = min(rows, start + k)
            out, layers = runner.run(_slice(batch, start, stop), stop - start)
            parts.append(out)
            layer_parts.append(layers)
            part_rows.append(stop - start)
        joined = _concat(parts)
        joined_layers = _concat_layers(layer_parts, part_rows) if ref_layers else []
        verdict = _verdict(runner, ref, joined, ref_layers, joined_layers)
        per_size[str(k)] = {"stable": verdict.stable, "max_ulp": verdict.max_ulp,
                            "first_layer": verdict.first_layer}
        if worst is None or (verdict.stable is False and (worst.stable is not False or
                                                          (verdict.max_ulp or 0) > (worst.max_ulp or 0))):
            worst = verdict
    assert worst is not None
    return CheckResult(stable=worst.stable, max_ulp=worst.max_ulp, first_layer=worst.first_layer,
                       rows_differing=worst.rows_differing, note=worst.note, details={"sub_batches": per_size})


def _threads(runner: _Runner, batch: Any, rows: int, ref: list[Leaf], ref_layers: LayerOutputs) -> CheckResult:
    now = runner.threads()
    if now is None:
        return CheckResult(stable=None, note=f"the thread count of a {runner.framework} function cannot be "
                                              "changed for one call in this process: run `twinrun probe SCRIPT` "
                                              "(fresh processes)")
    other = 1 if now > 1 else 2
    got = runner.with_threads(other, batch, rows)
    assert got is not None
    out, layers = got
    return _verdict(runner, ref, out, ref_layers, layers, details={"threads": [now, other]})
