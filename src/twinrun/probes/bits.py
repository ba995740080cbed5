"""Outputs as bits, compared row by row: the ULP distance of each row, the first layer whose output
differs, and recordings in ``.npz`` files (never pickled) for calls made in other processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._errors import UsageError

__all__ = ["Comparison", "LayerOutputs", "Leaf", "as_leaf", "compare_leaves", "first_layer", "leaves",
           "load_outputs", "row_ulps", "save_outputs"]


class Leaf(NamedTuple):
    """One output array, kept as bits: ``kind`` "float" (``values`` is the unsigned-integer view of
    IEEE floats of any width), "bfloat16" (its 16-bit patterns) or "int" (``values`` as int64); the
    first dimension is the batch. The same shape as the adapters' ``Bits`` tuples."""

    values: np.ndarray
    kind: str


# (name of the layer, with "#k" for its k-th call when it runs more than once; its output leaves)
LayerOutputs = list[tuple[str, list[Leaf]]]


def leaves(bits: Sequence[tuple[np.ndarray, str]]) -> list[Leaf]:
    return [Leaf(*b) for b in bits]


def layer_leaves(layers: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]]) -> LayerOutputs:
    return [(name, leaves(bits)) for name, bits in layers]


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


_EXPONENT = {16: 0x7C00, 32: 0x7F800000, 64: 0x7FF0000000000000}


def row_ulps(a: Leaf, b: Leaf) -> np.ndarray:
    """Per row (first dimension), the largest distance between ``a`` and ``b``: units in the last
    place for floats (NaN against NaN counts 0, NaN against a number inf), plain differences for
    integers. float64 rows."""
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
        mask = np.array(0x7F80 if a.kind == "bfloat16" else _EXPONENT[width], dtype=a.values.dtype)
        frac = ~mask & ~np.array(1 << (width - 1), dtype=a.values.dtype)
        nan_a = ((a.values & mask) == mask) & ((a.values & frac) != 0)
        nan_b = ((b.values & mask) == mask) & ((b.values & frac) != 0)
        diff = np.where(nan_a & nan_b, 0.0, np.where(nan_a | nan_b, np.inf, diff))
    return diff.reshape(rows, -1).max(axis=1) if diff.size else np.zeros(rows)


class Comparison(NamedTuple):
    """Two calls' outputs compared: identical bits, the largest ULP distance (None: a NaN on one side
    only), how many rows differ, and the largest distance of each row."""

    identical: bool
    max_ulp: int | None
    rows_differing: int
    ulp_per_row: list[float]


def compare_leaves(a: Sequence[Leaf], b: Sequence[Leaf]) -> Comparison:
    """Compare two outputs (lists of leaves of one batch) row by row."""
    if len(a) != len(b):
        raise UsageError(f"the calls returned {len(a)} and {len(b)} arrays: the outputs are not comparable")
    rows = a[0].values.shape[0] if a and a[0].values.ndim else 0
    if all(x.values.shape == y.values.shape and np.array_equal(x.values, y.values) for x, y in zip(a, b)):
        return Comparison(True, 0, 0, [0.0] * rows)
    per_row = np.max([row_ulps(x, y) for x, y in zip(a, b)], axis=0)
    worst = float(per_row.max()) if per_row.size else 0.0
    return Comparison(False, int(worst) if np.isfinite(worst) else None, int((per_row > 0).sum()),
                      [float(v) for v in per_row])


def first_layer(a: LayerOutputs, b: LayerOutputs) -> str | None:
    """The first layer, in ``a``'s order, whose output bits differ in ``b`` (layers missing from
    ``b`` or of another shape are skipped: they cannot be compared)."""
    other = dict(b)
    for name, outs in a:
        theirs = other.get(name)
        if theirs is None or len(theirs) != len(outs):
            continue
        if any(x.values.shape == y.values.shape and not np.array_equal(x.values, y.values)
               for x, y in zip(outs, theirs)):
            return name
    return None


# --- recordings in files (the CLI compares calls made in other processes) -----------------------

def save_outputs(path: str, outputs: Sequence[Leaf], layers: LayerOutputs,
                 inputs: Sequence[Leaf] = (), meta: dict[str, str] | None = None) -> None:
    """Write one call's output leaves, layer outputs, input leaves and string facts to an ``.npz``
    file (no pickle: every entry is a plain numeric or string array)."""
    arrays: dict[str, np.ndarray] = {}
    for i, leaf in enumerate(outputs):
        arrays[f"out/{i}/{leaf.kind}"] = leaf.values
    for i, leaf in enumerate(inputs):
        arrays[f"in/{i}/{leaf.kind}"] = leaf.values
    for i, (name, outs) in enumerate(layers):
        for j, leaf in enumerate(outs):
            arrays[f"layer/{i}/{j}/{leaf.kind}/{name}"] = leaf.values
    for key, value in (meta or {}).items():
        arrays[f"meta/{key}"] = np.array(str(value))
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds like allow_pickle


class Recording(NamedTuple):
    outputs: list[Leaf]
    layers: LayerOutputs
    inputs: list[Leaf]
    meta: dict[str, str]


def load_outputs(path: str) -> Recording:
    """Read what ``save_outputs`` wrote. Never unpickles: object arrays are refused."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a probe recording ({exc}); record it again with twinrun probe") from None
    outputs: dict[int, Leaf] = {}
    inputs: dict[int, Leaf] = {}
    layers: dict[int, tuple[str, dict[int, Leaf]]] = {}
    meta: dict[str, str] = {}
    try:
        with data:
            for key in data.files:
                parts = key.split("/", 4)
                if parts[0] in ("out", "in") and len(parts) == 3:
                    (outputs if parts[0] == "out" else inputs)[int(parts[1])] = Leaf(data[key], parts[2])
                elif parts[0] == "layer" and len(parts) == 5:
                    entry = layers.setdefault(int(parts[1]), (parts[4], {}))
                    entry[1][int(parts[2])] = Leaf(data[key], parts[3])
                elif parts[0] == "meta" and len(parts) == 2:
                    meta[parts[1]] = str(data[key])
                else:
                    raise UsageError(f"{path}: unexpected entry {key!r}: not a probe recording")
    except ValueError as exc:   # an object array (allow_pickle=False) or a bad index
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{path}: not a probe recording ({exc})") from None
    return Recording([outputs[i] for i in sorted(outputs)],
                     [(layers[i][0], [layers[i][1][j] for j in sorted(layers[i][1])]) for i in sorted(layers)],
                     [inputs[i] for i in sorted(inputs)], meta)
