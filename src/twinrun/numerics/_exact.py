"""The exact core of ``twinrun.numerics``: binary formats, the superaccumulator (``xsum``), exact
values as ``Fraction``, correct rounding to a narrower format, and the vectorized exact paths.

Every function here is exact or correctly rounded; ``twinrun.numerics`` (the public functions) reads
the inputs, picks the path and shapes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .._errors import FrameworkMissingError


@dataclass(frozen=True)
class _Format:
    """A binary floating-point format: ``precision`` significand bits (with the hidden one), the
    smallest normal exponent and the largest exponent."""

    name: str
    precision: int
    emin: int
    emax: int

    @property
    def max_finite(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.precision), self.emax)


_FORMATS = {
    "float64": _Format("float64", 53, -1022, 1023),
    "float32": _Format("float32", 24, -126, 127),
    "float16": _Format("float16", 11, -14, 15),
    "bfloat16": _Format("bfloat16", 8, -126, 127),
}

# Rows at least this long go to the large superaccumulator, whose fixed cost is higher but whose
# per-term cost is about 4x lower (measured with xsum 2.0.0).
_LARGE_FROM = 2048
# float32/float16 terms are widened to float64 this many at a time: a reused buffer stays in cache.
_CHUNK = 1 << 15


def _xsum() -> Any:
    try:
        import xsum  # no type stubs (mypy: ignore_missing_imports)
    except ImportError:
        raise FrameworkMissingError("twinrun.numerics needs the xsum package; install it with: "
                                    "pip install 'twinrun[numerics]' (or pip install xsum)") from None
    return xsum


# --- the exact core -------------------------------------------------------------------------------

def _accumulate(row: np.ndarray) -> Any:
    """A superaccumulator holding the exact sum of ``row`` (any float dtype, any strides)."""
    xs = _xsum()
    acc = xs.xsum_large_accumulator() if row.size >= _LARGE_FROM else xs.xsum_small_accumulator()
    if row.dtype == np.float64:
        # xsum reads a strided array as if it were contiguous (wrong sums): always pass contiguous.
        xs.xsum_add(acc, np.ascontiguousarray(row))
    else:
        buf = np.empty(min(row.size, _CHUNK))
        for i in range(0, row.size, _CHUNK):
            part = buf[:min(_CHUNK, row.size - i)]
            np.copyto(part, row[i:i + _CHUNK])  # float32/float16 -> float64 is exact
            xs.xsum_add(acc, part)
    return acc


def _hi_and_sign(acc: Any) -> tuple[float, int]:
    """``RN64(S)`` and the sign of ``S - RN64(S)`` (0 when the float64 is exact)."""
    xs = _xsum()
    hi = xs.xsum_round(acc)
    if not math.isfinite(hi) or hi == 0.0:
        return hi, 0
    xs.xsum_add(acc, -hi)  # exact: the accumulator now holds what the float64 left out
    rest = xs.xsum_round(acc)
    return hi, (rest > 0) - (rest < 0)


def _exact_value(row: np.ndarray) -> Fraction | float:
    """The exact sum of a float row as a Fraction, or a float NaN/inf when IEEE says so."""
    xs = _xsum()
    acc = _accumulate(row)
    hi = xs.xsum_round(acc)
    if math.isnan(hi):
        return hi
    if math.isinf(hi):
        if np.isinf(row).any():
            return hi
        return _exact_overflowed(row)
    total = Fraction(0)
    # Peel the sum into float64 parts, each the rounding of what is left: at most ~40 of them.
    for _ in range(64):
        if hi == 0.0:
            return total
        total += Fraction(hi)
        xs.xsum_add(acc, -hi)
        hi = xs.xsum_round(acc)
    raise AssertionError("superaccumulator did not reach zero after 64 parts")


def _exact_overflowed(row: np.ndarray) -> Fraction:
    """Exact sum of finite float64 terms whose sum exceeds float64's range: scale the large terms
    down by 2**128 (exact for terms of at least 2**-800), sum both parts exactly, scale back."""
    row = np.asarray(row, np.float64)
    big = np.abs(row) >= 2.0 ** -800
    scaled = _exact_value(row[big] * 2.0 ** -128)
    small = _exact_value(row[~big])
    assert isinstance(scaled, Fraction) and isinstance(small, Fraction)
    return scaled * 2 ** 128 + small


def _round_narrow(hi: np.ndarray, sign: np.ndarray, fmt: _Format) -> np.ndarray:
    """Correctly round exact values ``S`` to ``fmt``, given ``hi = RN64(S)`` and ``sign(S - hi)``.

    Every rounding boundary of a narrower format (a midpoint between two neighbours) is a float64,
    so ``hi`` lies on the same side of it as ``S`` unless ``hi`` *is* the midpoint; only then is the
    sign of ``S - hi`` needed. Returns float64 values that ``fmt`` represents exactly."""
    out = np.array(hi, dtype=np.float64, copy=True)
    if fmt.name == "float64":
        return out
    sel = np.isfinite(out) & (out != 0.0)
    h = out[sel]
    mag = np.abs(h)
    _, e = np.frexp(mag)                                   # mag in [2**(e-1), 2**e)
    q = np.maximum(e - fmt.precision, fmt.emin - fmt.precision + 1)   # the ulp is 2**q
    scaled = np.ldexp(mag, -q)                             # exact: a power-of-two scaling
    n = np.floor(scaled)
    frac = scaled - n
    toward = sign[sel] * np.sign(h)                        # sign of |S| - |hi|
    tie = frac == 0.5
    up = (frac > 0.5) | (tie & (toward > 0)) | (tie & (toward == 0) & (np.fmod(n, 2.0) == 1.0))
    rounded = np.ldexp(n + up, q)
    rounded[rounded > fmt.max_finite] = np.inf             # IEEE overflow: beyond max + half an ulp
    out[sel] = np.copysign(rounded, h)
    return out


def _round_fraction(value: Fraction, fmt: _Format, negative_zero: bool = False) -> float:
    """Correctly round an exact rational to ``fmt`` (ties to even), as a float64 holding it exactly."""
    if value == 0:
        return -0.0 if negative_zero else 0.0
    mag = abs(value)
    # 2**e <= mag < 2**(e+1)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if mag < Fraction(2) ** e:
        e -= 1
    q = max(e - fmt.precision + 1, fmt.emin - fmt.precision + 1)
    scaled = mag / Fraction(2) ** q
    n = scaled.numerator // scaled.denominator
    rest = scaled - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1):
        n += 1
    if n * Fraction(2) ** q > Fraction(fmt.max_finite):
        result = math.inf
    else:
        result = math.ldexp(float(n), q) if n else 0.0     # n < 2**54: float(n) is exact
    return -result if value < 0 else result


def _int_exact(rows: np.ndarray) -> list[int]:
    """Exact integer row sums as Python ints (no wrap-around)."""
    wide = rows.astype(np.uint64 if rows.dtype.kind == "u" else np.int64, copy=False)
    # Two 32-bit halves summed separately cannot overflow int64 below 2**31 terms.
    hi = (wide >> np.array(32, wide.dtype)).astype(np.int64).sum(axis=1)
    lo = (wide & np.array(0xFFFFFFFF, wide.dtype)).astype(np.int64).sum(axis=1)
    return [(int(h) << 32) + int(v) for h, v in zip(hi, lo)]


# Rows up to this long are first tried in plain float64, vectorized (see _exact_short_rows).
_SHORT_ROW = 256


def _exact_short_rows(rows: np.ndarray, fmt: _Format) -> tuple[np.ndarray, np.ndarray]:
    """Exact row sums of narrow floats (float32/float16/bfloat16 values), vectorized: ``(sums, ok)``.

    Every term of a row is a multiple of the smallest term's last-place unit ``2**m``; when the sum
    of the magnitudes stays below ``2**(52+m)`` (one bit of margin for rounding that bound), every
    partial sum is a multiple of ``2**m`` below ``2**(53+m)``, a float64, so float64 addition in any
    order is exact. ``ok`` marks the rows where this holds; the others need the superaccumulator."""
    wide = rows.astype(np.float64)
    mag = np.abs(wide)
    with np.errstate(all="ignore"):
        _, e = np.frexp(mag)                                   # mag in [2**(e-1), 2**e)
        unit = np.maximum(e - fmt.precision, fmt.emin - fmt.precision + 1)
        unit = np.where(mag > 0, unit, 4096).min(axis=1)      # 4096: no nonzero term
        bound = np.ldexp(1.0, np.minimum(52 + unit, 1100))
        total = mag.sum(axis=1)
        ok = np.isfinite(wide).all(axis=1) & (total < bound)
    return wide.sum(axis=1), ok


def _mean_of_exact(sums: np.ndarray, count: int, fmt: _Format) -> np.ndarray:
    """Correctly rounded ``sums / count`` for exact float64 ``sums`` of narrow floats: the quotient's
    float64 and the exact sign of its remainder (Dekker's product), then one rounding to ``fmt``."""
    q = sums / count
    p, e = _two_product(q, np.full_like(q, float(count)))
    # sums - p is exact (p is within two ulps of sums: Sterbenz); rounding the difference with e
    # keeps its sign, which is all the rounding needs
    rest = (sums - p) - e
    return _round_narrow(q, np.sign(rest), fmt)


_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's splitter for float64


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a*b == p + e`` exactly (Dekker), when neither overflow nor underflow interferes."""
    p = a * b
    c = _SPLIT * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLIT * b
    bh = c - (c - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e
