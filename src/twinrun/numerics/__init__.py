"""Sums, means and dot products whose bits do not depend on the order of the terms.

``repro_sum``, ``repro_mean`` and ``repro_dot`` return the **correctly rounded** result: the exact
(infinitely precise) value of the sum, mean or dot product, rounded once, to nearest with ties to
even, to the result dtype. An exact value has one rounding, so any order of the terms, any chunking,
any thread count and any machine give the same bits.

>>> import numpy as np
>>> x = np.array([1e16, 1.0, -1e16])
>>> float(np.sum(x)), float(repro_sum(x))      # np.sum loses the 1.0 to rounding
(0.0, 1.0)
>>> p = np.array([[0.1, 0.7], [0.2, 0.6], [0.3, 0.5]], np.float32)   # 3 models' predictions
>>> bool((repro_mean(p, axis=0) == repro_mean(p[::-1], axis=0)).all())
True

Inputs: NumPy arrays (and anything ``np.asarray`` takes: lists, JAX arrays) give NumPy results;
PyTorch tensors give tensors of the same kind (on the same device, without autograd history).
torch is imported only when a tensor is passed (``twinrun.frameworks.torch.numerics``).

Result dtypes follow ``np.sum``/``np.mean``: a float input keeps its dtype (float64, float32,
float16, and bfloat16 for tensors); integer and bool inputs sum to int64 (uint64 for unsigned) and
their mean is float64. ``repro_dot`` of two float inputs has the dtype of ``a * b``.

Special values, as IEEE 754 addition gives them in every order:

- NaN anywhere, or +inf and -inf together, give NaN; otherwise an infinite term gives that infinity.
- An exact sum beyond the result dtype's largest finite value rounds to +-inf (IEEE overflow:
  beyond max + half an ulp), even when every term is finite. ``repro_mean`` is exact first and
  divides after, so the mean of ``[1e308, 1e308]`` is ``1e308``, not inf.
- Zero: an exact zero is +0.0, except that a sum of terms that are all -0.0 is -0.0. A mean or dot
  product too small for the dtype rounds to a signed zero (the sign of the exact value).
- Subnormal terms and results are exact / correctly rounded like any other value.
- Empty: the sum and dot are 0 of the result dtype; the mean is NaN (as ``np.mean``, no warning).
- Integer sums are exact; a sum that does not fit the result dtype raises ``UsageError`` instead of
  wrapping around as ``np.sum`` does.

How: the exact sum is kept in a superaccumulator (Radford Neal's algorithm, through the ``xsum``
package), which rounds it to float64. For a narrower result dtype, rounding that float64 again would
round twice (wrong when it lands exactly halfway between two float32 values), so the accumulator also
gives the sign of what the float64 left out, and ties are broken by it (``_round_narrow``). Means
divide the exact sum, held as a ``fractions.Fraction``. Dot products add exact products: a float32
product is exact in float64; a float64 product is split into two float64 values (Dekker's
TwoProduct) where that is exact, and taken as an exact fraction elsewhere.

Short rows (up to 256 terms) of float32/float16/bfloat16 values are first summed in float64, which is
exact whenever the row's magnitudes allow it (checked per row, see ``_exact_short_rows``): an
ensemble average over a few models stays vectorized. Other rows take the superaccumulator.

Cost (benchmarks/bench_numerics.py, AVX-512 EPYC, busy): a full sum of 10 M float64 is one pass of
the superaccumulator, 2.2-2.7x ``np.sum`` (all of it xsum's; ``math.fsum``: 103x). xsum holds the GIL,
so splitting the array across threads is slower (3.0x), not faster (docs/inference.md). 10 M float32
are widened to float64 chunk by chunk first: 30-40x ``np.sum`` of float32 (which reads half the
bytes). The ensemble mean of 7 x 10,000 x 10 float32 predictions takes about 0.07 s. Rows that need
the superaccumulator cost about 10 microseconds each (70 for a mean), plus the terms. ``repro_dot``
of float64 vectors makes about 20 NumPy passes (Dekker's products) before the superaccumulator.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from typing import Any

import numpy as np

from .._errors import UsageError
from ._exact import (
    _FORMATS,
    _SHORT_ROW,
    _accumulate,
    _exact_short_rows,
    _exact_value,
    _Format,
    _hi_and_sign,
    _int_exact,
    _mean_of_exact,
    _round_fraction,
    _round_narrow,
    _two_product,
    _xsum,
)

__all__ = ["repro_dot", "repro_mean", "repro_sum"]

Axis = int | tuple[int, ...] | None


# --- inputs ---------------------------------------------------------------------------------------

def _is_torch_tensor(x: object) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch is imported already
    return torch is not None and isinstance(x, torch.Tensor)


def _as_array(x: Any, what: str) -> tuple[np.ndarray, str, Any]:
    """``(array, dtype name, tensor or None)``; bfloat16 tensors arrive widened to float32 (exact)."""
    if _is_torch_tensor(x):
        from ..frameworks.torch import numerics as torch_numerics
        arr, name = torch_numerics.to_numpy(x)
        return arr, name, x
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: cannot read {type(x).__name__} as an array ({exc}); "
                         "pass a NumPy array or a PyTorch tensor") from None
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype.name in _FORMATS:
        return arr, arr.dtype.name, None
    if kind in "iub":
        return arr, arr.dtype.name, None
    raise UsageError(f"{what}: dtype {arr.dtype} is not supported; use float64, float32, float16, "
                     "bfloat16 (tensors), integer or bool values")


def _wrap(result: np.ndarray, name: str, like: Any) -> Any:
    """Return NumPy scalars/arrays for NumPy input, tensors for tensor input."""
    if like is not None:
        from ..frameworks.torch import numerics as torch_numerics
        return torch_numerics.from_numpy(np.asarray(result), name, like)
    if result.ndim == 0:
        return result[()]
    return result


def _normalize_axis(axis: Axis, ndim: int, what: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    if not isinstance(axes, tuple) or not all(isinstance(a, (int, np.integer)) for a in axes):
        raise UsageError(f"{what}: axis must be None, an int or a tuple of ints, not {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise UsageError(f"{what}: axis {a} is out of range for an array of {ndim} dimensions")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise UsageError(f"{what}: axis {axis!r} repeats a dimension")
    return tuple(out)


def _rows(arr: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The reduced axes moved last and flattened: ``(rows of terms, shape of the result)``."""
    keep = [d for d in range(arr.ndim) if d not in axes]
    out_shape = tuple(arr.shape[d] for d in keep)
    moved = np.transpose(arr, keep + list(axes))
    k = math.prod(arr.shape[d] for d in axes)
    return moved.reshape(math.prod(out_shape), k), out_shape


# --- reductions -----------------------------------------------------------------------------------

def _int_sums(rows: np.ndarray, out_dtype: np.dtype, what: str) -> np.ndarray:
    """Exact integer row sums, checked against ``out_dtype``'s range instead of wrapping around."""
    exact = _int_exact(rows)
    info = np.iinfo(out_dtype)
    bad = [v for v in exact if not info.min <= v <= info.max]
    if bad:
        raise UsageError(f"{what}: the exact integer sum {bad[0]} does not fit {out_dtype}; "
                         "convert the input to float64 for a rounded sum")
    return np.array(exact, dtype=out_dtype)


def _all_negative_zero(rows: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Rows whose (zero) sum comes from terms that are all -0.0: IEEE gives -0.0 for those."""
    zero = result == 0.0
    if not zero.any() or rows.shape[1] == 0:
        return np.zeros(result.shape, bool)
    found = np.zeros(result.shape, bool)
    found[zero] = np.signbit(rows[zero]).all(axis=1)
    return found


def _sum_rows(rows: np.ndarray, fmt: _Format) -> np.ndarray:
    hi = np.empty(rows.shape[0])
    sign = np.zeros(rows.shape[0])
    todo = np.ones(rows.shape[0], bool)
    if rows.dtype.itemsize < 8 and 0 < rows.shape[1] <= _SHORT_ROW:
        sums, ok = _exact_short_rows(rows, fmt)
        hi[ok] = sums[ok]          # exact: rounding it once below is the correct rounding
        todo = ~ok
    for i in np.flatnonzero(todo):
        row = rows[i]
        acc = _accumulate(row)
        if fmt.name == "float64":
            hi[i] = _xsum().xsum_round(acc)   # xsum rounds correctly to float64: nothing more to do
        else:
            hi[i], sign[i] = _hi_and_sign(acc)
    out = _round_narrow(hi, sign, fmt)
    out[_all_negative_zero(rows, out)] = -0.0
    return out


def _result_int_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.uint64) if dtype.kind == "u" else np.dtype(np.int64)


def repro_sum(x: Any, axis: Axis = None) -> Any:
    """The correctly rounded sum of ``x`` over ``axis`` (all axes by default).

    >>> sum([0.1] * 10), float(repro_sum(np.array([0.1] * 10)))   # ten 0.1's: rounded once, at the end
    (0.9999999999999999, 1.0)
    >>> float(repro_sum(np.array([3.0, 5.0], np.float32)))
    8.0
    """
    arr, name, like = _as_array(x, "repro_sum")
    rows, out_shape = _rows(arr, _normalize_axis(axis, arr.ndim, "repro_sum"))
    if arr.dtype.kind in "iub":
        out_dtype = _result_int_dtype(arr.dtype)
        result = _int_sums(rows, out_dtype, "repro_sum")
        return _wrap(result.reshape(out_shape), out_dtype.name, like)
    fmt = _FORMATS[name]
    result = _sum_rows(rows, fmt)
    return _wrap(result.reshape(out_shape).astype(_numpy_dtype(name)), name, like)


def repro_mean(x: Any, axis: Axis = None) -> Any:
    """The correctly rounded mean of ``x`` over ``axis``: the exact sum divided by the count, rounded
    once. An ensemble average that does not depend on the order of the models:

    >>> preds = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])   # models x classes
    >>> repro_mean(preds, axis=0)
    array([0.5, 0.5])
    """
    arr, name, like = _as_array(x, "repro_mean")
    rows, out_shape = _rows(arr, _normalize_axis(axis, arr.ndim, "repro_mean"))
    count = rows.shape[1]
    if arr.dtype.kind in "iub":
        name = "float64"
        # int / int in Python is correctly rounded to float64.
        result = np.array([s / count if count else math.nan for s in _int_exact(rows)], dtype=np.float64)
        return _wrap(result.reshape(out_shape), name, like)
    fmt = _FORMATS[name]
    result = np.full(rows.shape[0], math.nan)
    todo = np.full(rows.shape[0], count > 0)
    if rows.dtype.itemsize < 8 and 0 < count <= _SHORT_ROW:
        sums, ok = _exact_short_rows(rows, fmt)
        with np.errstate(all="ignore"):
            result[ok] = _mean_of_exact(sums[ok], count, fmt)
        todo = ~ok
    for i in np.flatnonzero(todo):
        row = rows[i]
        exact = _exact_value(row)
        if isinstance(exact, float):
            result[i] = exact
        else:
            negzero = exact == 0 and bool(np.signbit(row).all())
            result[i] = _round_fraction(exact / count, fmt, negzero)
    return _wrap(result.reshape(out_shape).astype(_numpy_dtype(name)), name, like)


def _numpy_dtype(name: str) -> np.dtype:
    """NumPy has no bfloat16: such results travel as float32 holding bfloat16 values exactly."""
    return np.dtype(np.float32 if name == "bfloat16" else name)


# --- dot products ---------------------------------------------------------------------------------

def repro_dot(a: Any, b: Any) -> Any:
    """The correctly rounded dot product of two 1-D vectors: the exact sum of the exact products.

    >>> a = np.array([1e16, 1.0, -1e16]); b = np.array([1.0, 1.0, 1.0])
    >>> float(np.dot(a, b)), float(repro_dot(a, b))
    (0.0, 1.0)
    """
    xa, name_a, like_a = _as_array(a, "repro_dot")
    xb, name_b, like_b = _as_array(b, "repro_dot")
    if (like_a is None) != (like_b is None):
        raise UsageError("repro_dot: pass two NumPy arrays or two tensors, not one of each")
    if xa.ndim != 1 or xb.ndim != 1 or xa.shape != xb.shape:
        raise UsageError(f"repro_dot: needs two 1-D vectors of the same length, got shapes "
                         f"{xa.shape} and {xb.shape}")
    if xa.dtype.kind in "iub" and xb.dtype.kind in "iub":
        out_dtype = np.result_type(xa.dtype, xb.dtype, np.int64)
        whole = sum(int(u) * int(v) for u, v in zip(xa.tolist(), xb.tolist()))
        info = np.iinfo(out_dtype)
        if not info.min <= whole <= info.max:
            raise UsageError(f"repro_dot: the exact integer dot product {whole} does not fit {out_dtype}; "
                             "convert the inputs to float64 for a rounded result")
        return _wrap(np.array(whole, dtype=out_dtype), out_dtype.name, like_a)
    for arr, other in ((xa, xb), (xb, xa)):
        if arr.dtype.kind in "iub" and other.dtype.kind == "f" and arr.size and np.abs(arr).max() > 2 ** 53:
            raise UsageError("repro_dot: integers above 2**53 mixed with floats would be rounded on "
                             "conversion to float64; convert them yourself or use two integer vectors")
    name = _dot_dtype_name(name_a, name_b)
    fmt = _FORMATS[name]
    fa, fb = xa.astype(np.float64), xb.astype(np.float64)
    narrow = max(_FORMATS.get(name_a, _FORMATS["float64"]).precision,
                 _FORMATS.get(name_b, _FORMATS["float64"]).precision) <= 24
    with np.errstate(all="ignore"):
        if narrow:
            # Two float32 (or narrower) significands multiply into 48 bits: the float64 product is exact.
            terms = fa * fb
            exact: Fraction | float = _exact_value(terms) if terms.size else Fraction(0)
        else:
            exact = _exact_dot64(fa, fb)
    if isinstance(exact, float):
        value = exact
    else:
        with np.errstate(all="ignore"):
            negzero = exact == 0 and fa.size > 0 and bool(np.signbit(fa * fb).all())
        value = _round_fraction(exact, fmt, negzero)
    return _wrap(np.array(value).astype(_numpy_dtype(name)), name, like_a)


def _dot_dtype_name(a: str, b: str) -> str:
    """The wider float format of the two; an integer side counts as float64 (as NumPy promotes)."""
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"  # neither holds the other (PyTorch promotes the pair to float32)
    fa, fb = (_FORMATS.get(n, _FORMATS["float64"]) for n in (a, b))
    return max(fa, fb, key=lambda f: (f.precision, f.emax)).name


def _exact_dot64(a: np.ndarray, b: np.ndarray) -> Fraction | float:
    """Exact dot product of float64 vectors (a NaN/inf float when IEEE says so)."""
    p, e = _two_product(a, b)
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.all():
        special = (a * b)[~finite]  # inf*0 is NaN, inf*x is +-inf: as a float dot gives
        if np.isnan(special).any() or (np.isinf(special).any() and
                                         (special > 0).any() and (special < 0).any()):
            return math.nan
        return float(special[np.isinf(special)][0])
    # TwoProduct is exact when splitting cannot overflow and the error term cannot underflow.
    zero = (a == 0.0) | (b == 0.0)
    absp = np.abs(p)
    safe = zero | ((np.abs(a) < 2.0 ** 995) & (np.abs(b) < 2.0 ** 995)
                   & (absp >= 2.0 ** -960) & (absp < 2.0 ** 1022))
    total = Fraction(0)
    keep = safe & ~zero
    if keep.any():
        part = _exact_value(np.concatenate([p[keep], e[keep]]))
        assert isinstance(part, Fraction)  # every p and e here is finite
        total += part
    for u, v in zip(a[~safe].tolist(), b[~safe].tolist()):
        total += Fraction(u) * Fraction(v)
    return total
