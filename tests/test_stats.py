"""twinrun.stats against scipy, brute force, textbook values and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st

from twinrun import stats


def _boot(x, fn, seed, n=2000):
    return st.bootstrap((x,), fn, n_resamples=n, rng=np.random.default_rng(seed), method="BCa").confidence_interval


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 20, 33])
def test_iqm_is_scipy_trim_mean(n):
    x = np.random.default_rng(n).normal(size=n)
    assert stats.iqm(x) == pytest.approx(st.trim_mean(x, 0.25), abs=1e-12)


def test_summary_intervals_equal_scipy_bootstrap_of_each_statistic():
    # Continuous data: with ties, resample statistics equal to the estimate up to summation order
    # (1 ulp) tip BCa's bias correction either way, for scipy's own statistics too.
    x = np.random.default_rng(1).normal(size=31)
    s = stats.summarize(x, n_resamples=2000, seed=7)
    checks = {
        "mean": lambda v, axis: v.mean(axis=axis),
        "std": lambda v, axis: v.std(axis=axis, ddof=1),
        "median": lambda v, axis: np.median(v, axis=axis),
        "iqm": lambda v, axis: st.trim_mean(v, 0.25, axis=axis),
    }
    for name, fn in checks.items():
        ci = _boot(x, fn, 7)
        est = getattr(s, name)
        assert est.method == "BCa"
        assert (est.low, est.high) == pytest.approx((ci.low, ci.high), abs=1e-12), name
        assert est.value == pytest.approx(fn(x, axis=-1))


def test_prob_improvement_equals_brute_force_and_mann_whitney_u():
    rng = np.random.default_rng(2)
    a, b = np.round(rng.normal(size=23), 1), np.round(rng.normal(0.3, size=17), 1)
    brute = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])
    assert stats.prob_improvement(a, b) == pytest.approx(brute)
    u = st.mannwhitneyu(a, b).statistic
    assert stats.prob_improvement(a, b) == pytest.approx(u / (len(a) * len(b)))
    assert stats.cliffs_delta(a, b) == pytest.approx(np.mean(np.sign(a[:, None] - b[None, :])))


def test_two_sample_statistics_match_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1, 15), np.round(rng.normal(0.0, 2, 12), 1)
    c = stats.compare_samples(a, b, n_resamples=500, seed=11)
    assert c.welch_p == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert c.mannwhitney_p == pytest.approx(st.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    pooled = math.sqrt((14 * a.var(ddof=1) + 11 * b.var(ddof=1)) / 25)
    assert c.cohens_d == pytest.approx((a.mean() - b.mean()) / pooled)
    # The vectorised two-sample statistics resample exactly like scipy's own, non-vectorised, run.
    def brute(x, y):
        return [x.mean() - y.mean(), st.trim_mean(x, 0.25) - st.trim_mean(y, 0.25),
                np.mean((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :]))]
    uniq, (ca, cb) = stats._dense_codes(a, b)
    ref = st.bootstrap((ca, cb), lambda p, q: brute(uniq[p.astype(int)], uniq[q.astype(int)]), vectorized=False,
                       n_resamples=500, rng=np.random.default_rng(11), method="BCa").confidence_interval
    got = [c.diff_mean, c.diff_iqm, c.prob_improvement]
    assert [v for e in got for v in (e.low, e.high)] == pytest.approx(
        [v for lo, hi in zip(ref.low, ref.high) for v in (lo, hi)], abs=1e-12)
    assert c.prob_improvement.value == pytest.approx(stats.prob_improvement(a, b))
    assert c.diff_mean.value == pytest.approx(a.mean() - b.mean())
    assert c.diff_iqm.value == pytest.approx(st.trim_mean(a, 0.25) - st.trim_mean(b, 0.25))


def test_lower_is_better_flips_the_direction():
    a, b = np.arange(10.0), np.arange(10.0) + 20
    hi = stats.compare_samples(a, b, n_resamples=200)
    lo = stats.compare_samples(a, b, n_resamples=200, higher_is_better=False)
    assert hi.better == "B" and lo.better == "A"
    assert lo.prob_improvement.value == pytest.approx(1 - hi.prob_improvement.value)


def test_degenerate_bca_falls_back_to_percentile_and_says_so():
    s = stats.summarize([3.0] * 6, n_resamples=300)
    assert s.mean.method.startswith("percentile") and (s.mean.low, s.mean.high) == (3.0, 3.0)
    c = stats.compare_samples([1.0] * 4, [1.0] * 4, n_resamples=300)
    assert not c.significant and c.seeds_needed is None


@pytest.mark.parametrize("d, n", [(0.5, 64), (0.8, 26), (0.2, 394), (1.0, 17)])
def test_seeds_for_power_matches_textbook_t_test_sample_sizes(d, n):
    # Cohen (1988), two-sided alpha 0.05, power 0.8: 64, 26, 393-394, 17 per group.
    assert abs(stats.seeds_for_power(d) - n) <= 1


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([math.nan, 0.01])[0])


def test_same_distribution_is_called_different_at_most_about_alpha_of_the_time():
    rng = np.random.default_rng(12345)
    trials, alpha = 400, 0.05
    hits = sum(stats.compare_samples(rng.normal(size=10), rng.normal(size=10), alpha=alpha,
                                     n_resamples=100).significant for _ in range(trials))
    # Binomial(400, 0.05): P(X > ppf(0.9999)) < 1e-4, so the test cannot flake by chance.
    assert hits <= st.binom.ppf(0.9999, trials, alpha)


def test_a_clear_shift_is_detected():
    rng = np.random.default_rng(54321)
    trials = 100
    hits = [stats.compare_samples(rng.normal(1.5, 1, 12), rng.normal(size=12), n_resamples=100) for _ in range(trials)]
    # Power of Welch's test at d = 1.5, n = 12 is about 0.93.
    assert sum(c.better == "A" for c in hits) >= st.binom.ppf(1e-4, trials, 0.93)
    assert not any(c.better == "B" for c in hits)


def test_variance_shares_recover_the_sources():
    rng = np.random.default_rng(4)
    arms = {"init": rng.normal(0, 2.0, 60), "data": rng.normal(0, 1.0, 60), "none": np.zeros(60)}
    v = stats.variance_shares(arms, n_resamples=1000)
    init, data = arms["init"].var(ddof=1), arms["data"].var(ddof=1)
    assert v.shares["init"].value == pytest.approx(init / (init + data))
    assert v.shares["init"].low < 0.8 < v.shares["init"].high
    assert v.shares["none"].value == 0.0
    flat = stats.variance_shares({k: np.ones(5) for k in arms}, n_resamples=200)
    assert math.isnan(flat.shares["init"].value) and "undefined" in flat.notes[0]


def test_fewer_than_two_or_nonfinite_values_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        stats.summarize([1.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.summarize([1.0, float("nan")])
