"""twinrun.numerics: correctly rounded, order-independent sums, means and dot products.

The oracle is independent of the code under test: the exact value as a ``Fraction``, and the
correctly rounded result found by looking at the float nearest to it and at its two neighbours
(bit patterns +-1), the nearest one winning and ties going to the even bit pattern.
"""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from twinrun import UsageError
from twinrun.numerics import repro_dot, repro_mean, repro_sum

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (uint view, float dtype) per NumPy dtype; bfloat16 is handled through float32's upper half.
_BITS = {np.dtype(np.float64): np.uint64, np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16}


def _max_finite(dtype: np.dtype) -> Fraction:
    return Fraction(float(np.finfo(dtype).max))


def oracle_round(exact: Fraction, dtype: np.dtype, *, bf16: bool = False) -> float:
    """The float of ``dtype`` nearest to ``exact`` (ties to the even bit pattern), inf past IEEE's
    overflow threshold. bf16=True: bfloat16 values, returned as a Python float."""
    if bf16:
        dtype, ubits, shift = np.dtype(np.float32), np.uint32, 16
        top = Fraction(float(np.frombuffer(np.uint32(0x7F7F << 16).tobytes(), np.float32)[0]))
        half_ulp_top = Fraction(2) ** (127 - 8)
    else:
        ubits, shift = _BITS[dtype], 0
        top = _max_finite(dtype)
        half_ulp_top = Fraction(2) ** (np.finfo(dtype).maxexp - 1 - np.finfo(dtype).nmant - 1)
    if abs(exact) >= top + half_ulp_top:
        return math.inf if exact > 0 else -math.inf
    start = np.array(float(exact), dtype=np.float64).astype(dtype)  # within an ulp or two
    if not np.isfinite(start):
        start = np.array(math.copysign(float(top), exact)).astype(dtype)
    bits = int(np.abs(start).view(ubits)) >> shift
    best = None
    for cand in range(bits - 3, bits + 4):
        sign_flip = cand < 0
        raw = np.array((abs(cand) << shift), dtype=ubits).view(dtype)
        value = float(raw)
        if sign_flip or not math.isfinite(value):
            continue
        for signed in (value, -value):
            dist = abs(Fraction(signed) - exact)
            even = ((int(np.array(abs(signed), dtype).view(ubits)) >> shift) & 1) == 0
            key = (dist, not even)
            if best is None or key < best[0]:
                best = (key, signed)
    assert best is not None
    return best[1]


def exact_sum(values) -> Fraction:
    return sum((Fraction(float(v)) for v in values), Fraction(0))


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


finite64 = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
finite16 = st.floats(width=16, allow_nan=False, allow_infinity=False, allow_subnormal=True)
# Values around 1 with a few huge and tiny ones: cancellation and wide exponent ranges.
mixed64 = st.one_of(finite64, st.floats(-4, 4), st.sampled_from([1e16, -1e16, 2.0 ** -1074, -2.0 ** -1074,
                                                                  1e308, -1e308, 2.0 ** -1022]))


@st.composite
def arrays_and_perm(draw, dtype, elements, max_size=60):
    x = draw(hnp.arrays(dtype, st.integers(0, max_size), elements=elements))
    perm = draw(st.permutations(range(x.size)))
    return x, np.array(perm, dtype=np.int64)


@pytest.mark.parametrize("dtype,elements", [(np.float64, mixed64), (np.float32, finite32), (np.float16, finite16)])
def test_sum_is_correctly_rounded_and_order_independent(dtype, elements):
    @SETTINGS
    @given(arrays_and_perm(dtype, elements))
    def check(data):
        x, perm = data
        got = repro_sum(x)
        want = oracle_round(exact_sum(x), np.dtype(dtype))
        if want == 0 and x.size and np.signbit(x).all():
            want = -0.0  # only -0.0 terms: IEEE's -0.0
        assert same_bits(got, np.array(want, dtype)), (x.tolist(), got, want)
        assert same_bits(repro_sum(x[perm]), got)                 # shuffled
        assert same_bits(repro_sum(x[::-1]), got)                 # a strided view
        if x.size and x.size % 2 == 0:
            assert same_bits(repro_sum(x.reshape(2, -1)), got)    # rechunked, both axes at once
            assert same_bits(repro_sum(x.reshape(2, -1).T), got)  # and transposed (non-contiguous)
    check()


@SETTINGS
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(0, 7)), elements=finite32),
       st.sampled_from([0, 1, -1, (0, 1), None]))
def test_axis_sum_and_mean_match_row_by_row(x, axis):
    got = repro_sum(x, axis=axis)
    axes = {0: (0,), 1: (1,), -1: (1,), (0, 1): (0, 1), None: (0, 1)}[axis]
    keep = [d for d in range(2) if d not in axes]
    moved = np.transpose(x, keep + list(axes)).reshape(math.prod(x.shape[d] for d in keep),
                                                       math.prod(x.shape[d] for d in axes))
    want = np.array([oracle_round(exact_sum(r), np.dtype(np.float32)) for r in moved], np.float32)
    neg = [r.size > 0 and bool(np.signbit(r).all()) and w == 0 for r, w in zip(moved, want)]
    want[np.array(neg, bool)] = -0.0
    assert same_bits(got, want.reshape(np.shape(got)).astype(np.float32))
    mean = np.asarray(repro_mean(x, axis=axis))
    for r, m in zip(moved, mean.reshape(-1)):
        if r.size == 0:
            assert np.isnan(m)
        else:
            assert m == oracle_round(exact_sum(r) / r.size, np.dtype(np.float32))


@SETTINGS
@given(arrays_and_perm(np.float64, mixed64, max_size=40))
def test_mean_is_correctly_rounded(data):
    x, perm = data
    assume(x.size > 0)
    want = oracle_round(exact_sum(x) / x.size, np.dtype(np.float64))
    got = repro_mean(x)
    assert got == want or (want == 0 and got == 0)
    assert same_bits(repro_mean(x[perm]), got)


@SETTINGS
@given(st.data(), st.sampled_from([np.float64, np.float32]))
def test_dot_is_correctly_rounded(data, dtype):
    elements = mixed64 if dtype == np.float64 else finite32
    n = data.draw(st.integers(0, 30))
    a = data.draw(hnp.arrays(dtype, n, elements=elements))
    b = data.draw(hnp.arrays(dtype, n, elements=elements))
    exact = sum((Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b)), Fraction(0))
    got = repro_dot(a, b)
    want = oracle_round(exact, np.dtype(dtype))
    assert got == want or (want == 0 and got == 0), (a.tolist(), b.tolist())
    perm = data.draw(st.permutations(range(n)))
    assert same_bits(repro_dot(a[perm], b[perm]), got)


def test_float32_results_are_not_double_rounded():
    # exact 1 + 2**-24 + 2**-80: float64 rounding gives 1 + 2**-24, exactly halfway between two
    # float32s, and rounding that again (ties to even) gives 1.0. The correct float32 is 1 + 2**-23.
    x = np.array([1.0, 2.0 ** -24, 2.0 ** -80], np.float32)
    assert np.float32(np.sum(x.astype(np.float64))) == np.float32(1.0)    # the double rounding
    assert repro_sum(x) == np.float32(1.0 + 2.0 ** -23)
    assert repro_sum(np.array([1.0, 2.0 ** -24, -2.0 ** -80], np.float32)) == np.float32(1.0)
    assert repro_sum(np.array([1.0, 2.0 ** -24], np.float32)) == np.float32(1.0)          # a true tie: even
    assert repro_sum(np.array([1.0 + 2.0 ** -23, 2.0 ** -24], np.float32)) == np.float32(1.0 + 2.0 ** -22)
    # float16 and bfloat16 the same way
    h = np.array([1.0, 2.0 ** -11, 2.0 ** -24], np.float16)
    assert repro_sum(h) == np.float16(1.0 + 2.0 ** -10)
    b = torch.tensor([1.0, 2.0 ** -8, 2.0 ** -60], dtype=torch.bfloat16)
    got = repro_sum(b)
    assert got.dtype == torch.bfloat16 and got.item() == 1.0 + 2.0 ** -7
    # the mean, too: exact 0.5 + 2**-25 + 2**-81, whose float64 is a float32 tie
    assert repro_mean(np.array([2.0, 2.0 ** -23, 2.0 ** -79, 0.0], np.float32)) == np.float32(0.5 + 2.0 ** -24)


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(1, 40), elements=finite32))
def test_bfloat16_tensors(x):
    t = torch.from_numpy(x).to(torch.bfloat16)
    values = t.float().numpy()
    assume(np.isfinite(values).all())   # the conversion to bfloat16 may overflow
    got = repro_sum(t)
    assert got.dtype == torch.bfloat16 and got.shape == ()
    want = oracle_round(exact_sum(values), np.dtype(np.float32), bf16=True)
    if want == 0 and np.signbit(values).all():
        want = -0.0
    assert math.copysign(1, got.item()) == math.copysign(1, want) and (got.item() == want)
    assert torch.equal(repro_sum(t.flip(0)), got)


def test_special_values():
    inf, nan = math.inf, math.nan
    assert repro_sum(np.array([1.0, inf, 2.0])) == inf
    assert repro_sum(np.array([-inf, 1.0])) == -inf
    assert np.isnan(repro_sum(np.array([inf, -inf])))
    assert np.isnan(repro_sum(np.array([1.0, nan])))
    assert np.isnan(repro_sum(np.array([nan, inf], np.float32)))
    assert repro_mean(np.array([inf, 1.0])) == inf
    assert np.isnan(repro_dot(np.array([inf, 1.0]), np.array([0.0, 1.0])))     # inf * 0
    assert repro_dot(np.array([inf, 1e200]), np.array([1.0, -1e200])) == inf   # a finite overflowing product
    # zeros
    assert same_bits(repro_sum(np.array([-0.0, -0.0])), np.float64(-0.0))
    assert same_bits(repro_sum(np.array([-0.0, 0.0])), np.float64(0.0))
    assert same_bits(repro_sum(np.array([1.0, -1.0])), np.float64(0.0))
    assert same_bits(repro_sum(np.array([-0.0], np.float32)), np.float32(-0.0))
    # underflow keeps the sign
    assert same_bits(repro_mean(np.array([-2.0 ** -149, 0.0], np.float32)), np.float32(-0.0))
    # empty
    assert same_bits(repro_sum(np.array([], np.float32)), np.float32(0.0))
    assert np.isnan(repro_mean(np.array([])))
    assert same_bits(repro_dot(np.array([]), np.array([])), np.float64(0.0))
    assert repro_sum(np.zeros((0, 3)), axis=0).tolist() == [0.0, 0.0, 0.0]


def test_overflow_and_subnormals():
    big = np.finfo(np.float64).max
    assert repro_sum(np.array([big, big])) == math.inf
    assert repro_sum(np.array([big, big, -big])) == big          # no intermediate overflow
    assert repro_mean(np.array([big, big])) == big               # exact, then divided
    third = oracle_round((2 * Fraction(big) + Fraction(2.0 ** -1074)) / 3, np.dtype(np.float64))
    assert repro_mean(np.array([big, big, 2.0 ** -1074])) == third
    assert repro_dot(np.array([1e200, 1e200]), np.array([1e200, -1e200])) == 0.0  # np.dot: nan
    big32 = np.finfo(np.float32).max
    half_ulp = np.float32(2.0 ** 103)
    assert repro_sum(np.array([big32, half_ulp], np.float32)) == np.float32(math.inf)    # tie, odd -> up: inf
    assert repro_sum(np.array([big32, half_ulp, -2.0 ** -149], np.float32)) == big32     # just below: max
    tiny = 2.0 ** -1074
    assert repro_sum(np.array([tiny] * 7)) == 7 * tiny
    assert repro_sum(np.array([tiny, -tiny, tiny])) == tiny
    assert repro_mean(np.array([tiny, 0.0])) == 0.0               # 2**-1075: a tie, to even (zero)
    assert repro_mean(np.array([tiny, tiny, tiny, 0.0])) == tiny       # 0.75 of the smallest subnormal
    sub32 = np.float32(2.0 ** -149)
    assert repro_sum(np.array([sub32] * 3, np.float32)) == np.float32(3 * 2.0 ** -149)
    assert repro_dot(np.array([2.0 ** -600, 3.0]), np.array([2.0 ** -600, 0.0])) == 0.0   # underflows to +0
    assert repro_dot(np.array([2.0 ** -537, 1.0]), np.array([2.0 ** -537, 0.0])) == 2.0 ** -1074


def test_integers():
    x = np.array([2 ** 62, 2 ** 62, -(2 ** 62)], np.int64)
    assert repro_sum(x) == 2 ** 62 and repro_sum(x).dtype == np.int64
    with pytest.raises(UsageError, match="does not fit int64"):
        repro_sum(np.array([2 ** 62, 2 ** 62], np.int64))    # np.sum wraps around to a negative number
    assert repro_sum(np.array([1, 2, 3], np.int8)).dtype == np.int64
    assert repro_sum(np.array([255, 255], np.uint8)) == 510
    assert repro_sum(np.array([True, True, False])) == 2
    assert repro_mean(np.array([1, 2], np.int32)) == 1.5
    big = 2 ** 62 + 1
    assert repro_mean(np.array([big, big], np.int64)) == float(big)    # exact sum, one rounding
    assert repro_dot(np.array([3, 4]), np.array([5, 6])) == 39
    assert repro_sum(torch.arange(5)).dtype == torch.int64


def test_torch_tensors_keep_their_kind():
    t = torch.randn(4, 5, dtype=torch.float32, requires_grad=True)
    s = repro_sum(t, axis=1)
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float32 and s.shape == (4,) and not s.requires_grad
    assert torch.equal(s, torch.from_numpy(np.asarray(repro_sum(t.detach().numpy(), axis=1))))
    assert repro_mean(torch.ones(3, dtype=torch.float16)).dtype == torch.float16
    assert repro_dot(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)).item() == 3.0
    with pytest.raises(UsageError, match="not one of each"):
        repro_dot(torch.ones(3), np.ones(3))


def test_bad_inputs_say_what_to_do():
    with pytest.raises(UsageError, match="axis 2 is out of range"):
        repro_sum(np.ones((2, 2)), axis=2)
    with pytest.raises(UsageError, match="repeats a dimension"):
        repro_sum(np.ones((2, 2)), axis=(0, -2))
    with pytest.raises(UsageError, match="dtype complex128 is not supported"):
        repro_sum(np.ones(2, complex))
    with pytest.raises(UsageError, match="1-D vectors of the same length"):
        repro_dot(np.ones(2), np.ones(3))
    with pytest.raises(UsageError, match="dtype"):
        repro_sum(np.array(["a", "b"]))


def test_large_arrays_are_order_and_chunk_independent():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * np.exp(rng.uniform(-30, 30, 200_000))).astype(np.float32)
    got = repro_sum(x)
    perm = rng.permutation(x.size)
    assert same_bits(repro_sum(x[perm]), got)
    assert same_bits(repro_sum(torch.from_numpy(x[perm])).numpy(), got)
    assert got == oracle_round(exact_sum(x.tolist()), np.dtype(np.float32))
    # np.sum and torch.sum do depend on the order here
    assert {float(np.sum(x[rng.permutation(x.size)])) for _ in range(5)} != {float(got)}


def test_ensemble_average_is_order_independent():
    rng = np.random.default_rng(1)
    preds = rng.dirichlet(np.ones(10), size=(7, 300)).astype(np.float32)   # 7 models x 300 rows x 10 classes
    avg = repro_mean(preds, axis=0)
    assert avg.shape == (300, 10) and avg.dtype == np.float32
    for perm in (rng.permutation(7) for _ in range(5)):
        assert same_bits(repro_mean(preds[perm], axis=0), avg)
    orders = {np.mean(preds[rng.permutation(7)], axis=0).tobytes() for _ in range(20)}
    assert len(orders) > 1   # np.mean does change with the order of the models


def test_importing_numerics_imports_no_framework():
    code = ("import sys, numpy as np; from twinrun.numerics import repro_sum; repro_sum(np.ones(3)); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
