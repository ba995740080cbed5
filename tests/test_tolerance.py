"""Comparing two traces within a tolerance (comparison/tolerance.py): ULPs and relative differences per
phase, measured on traces whose values differ by known numbers of ULPs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twinrun import UsageError
from twinrun.comparison.tolerance import Tolerance, within_tolerance
from twinrun.trace import TraceWriter

BASE = np.linspace(0.5, 2.0, 100, dtype=np.float32)


def _nudge(x: np.ndarray, ulps: int, where: slice) -> np.ndarray:
    """``x`` with the elements at ``where`` moved ``ulps`` float32 steps up (positive values)."""
    bits = x.copy().view(np.int32)
    bits[where] += ulps
    return bits.view(np.float32)


def _trace(path: Path, grad: np.ndarray, param: np.ndarray, *, labels: np.ndarray | None = None,
           threshold: int = 65_536) -> str:
    w = TraceWriter(path, {"command": ["test"]}, value_threshold=threshold)
    w.add(0, "init", "w", BASE)
    if labels is not None:
        w.add(0, "input", "y", labels)
    w.add(0, "grad", "w", grad)
    w.add(0, "param", "w", param)
    w.commit_step(0)
    w.close("complete")
    return str(path)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    """B's gradient is 3 ULP off A's in 10 elements, its parameters 40 ULP off in 5."""
    a = _trace(tmp_path / "a.trace", BASE, BASE)
    b = _trace(tmp_path / "b.trace", _nudge(BASE, 3, slice(0, 10)), _nudge(BASE, 40, slice(50, 55)))
    return a, b


def test_exact_fails_at_the_first_differing_event(pair):
    check = within_tolerance(*pair, Tolerance.create())
    assert not check.passed and check.miss is not None
    assert (check.miss.step, check.miss.phase, check.miss.name) == (0, "grad", "w")
    assert (check.miss.outside, check.miss.differing, check.miss.max_ulp) == (10, 10, 3)
    assert "beyond the tolerance (exact) at step 0, in the backward pass, at the gradient of `w`: 10 of 100 values " \
           "are outside it, by up to 3 ULP" in check.sentence()


@pytest.mark.parametrize(("ulps", "passed", "phase"), [(2, False, "grad"), (3, False, "param"), (39, False, "param"),
                                                       (40, True, None)])
def test_ulps_for_every_phase(pair, ulps, passed, phase):
    check = within_tolerance(*pair, Tolerance.create(ulps=ulps))
    assert check.passed is passed
    assert (check.miss.phase if check.miss else None) == phase
    if passed:
        assert (check.differing_events, check.max_ulp_within) == (2, 40)
        assert "agree within the tolerance (ulps=40): 2 of 3 events differ, by at most 40 ULP" in check.sentence()


def test_per_phase_tolerance_leaves_other_phases_exact(pair):
    assert not within_tolerance(*pair, Tolerance.create(ulps={"grad": 3})).passed   # param stays exact
    check = within_tolerance(*pair, Tolerance.create(ulps={"grad": 3}, rtol={"param": 1e-5}))
    assert check.passed                                  # 40 ULP near 1.0 is ~5e-6 relative
    tight = within_tolerance(*pair, Tolerance.create(ulps={"grad": 3}, rtol={"param": 1e-6}))
    assert not tight.passed and tight.miss is not None and tight.miss.phase == "param"
    assert tight.miss.max_rel is not None and 1e-6 < tight.miss.max_rel < 1e-5


def test_integers_values_not_kept_and_structure_are_never_tolerated(tmp_path: Path):
    labels = np.arange(8, dtype=np.int64)
    a = _trace(tmp_path / "a.trace", BASE, BASE, labels=labels)
    b = _trace(tmp_path / "b.trace", BASE, BASE, labels=labels[::-1].copy())
    check = within_tolerance(a, b, Tolerance.create(ulps=10**6, rtol=1.0))
    assert not check.passed and check.miss is not None and check.miss.reason == "not-float"
    assert "no tolerance applies to integers" in check.sentence()

    big_a = _trace(tmp_path / "c.trace", BASE, BASE, threshold=10)
    big_b = _trace(tmp_path / "d.trace", _nudge(BASE, 1, slice(0, 1)), BASE, threshold=10)
    check = within_tolerance(big_a, big_b, Tolerance.create(ulps=100))
    assert not check.passed and check.miss is not None and check.miss.reason == "not-kept"
    assert "cannot tell" in check.sentence()

    c = _trace(tmp_path / "e.trace", BASE, BASE, labels=labels)
    check = within_tolerance(a, _trace(tmp_path / "f.trace", BASE, BASE), Tolerance.create(ulps=100))
    assert not check.passed and check.structural is not None and check.miss is None
    assert "no tolerance applies to structure" in check.sentence()
    assert within_tolerance(a, c, Tolerance.create()).passed


def test_nan_on_one_side_is_outside_any_tolerance(tmp_path: Path):
    nan = BASE.copy()
    nan[7] = np.nan
    a = _trace(tmp_path / "a.trace", BASE, BASE)
    b = _trace(tmp_path / "b.trace", nan, BASE)
    check = within_tolerance(a, b, Tolerance.create(ulps=2**31, rtol=1.0))
    assert not check.passed and check.miss is not None and check.miss.outside == 1
    both = _trace(tmp_path / "c.trace", nan, BASE)
    assert within_tolerance(b, both, Tolerance.create()).passed


@pytest.mark.parametrize(("kwargs", "words"), [
    (dict(ulps=-1), "ulps must be a whole number >= 0"),
    (dict(ulps=1.5), "ulps must be a whole number >= 0"),
    (dict(ulps=True), "ulps must be a whole number >= 0"),
    (dict(rtol=float("nan")), "rtol must be a finite number >= 0"),
    (dict(rtol="1e-6"), "rtol must be a finite number >= 0"),
    (dict(rtol={"weights": 1e-6}), "rtol: unknown phase 'weights'"),
])
def test_bad_tolerances_are_one_line_usage_errors(kwargs, words):
    with pytest.raises(UsageError, match=words) as e:
        Tolerance.create(**kwargs)
    assert "\n" not in str(e.value)
