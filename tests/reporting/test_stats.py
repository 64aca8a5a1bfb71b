"""The estimators against hand-computed cases (and scipy where it has the same estimator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from diffexp.reporting import stats


# -- curves --------------------------------------------------------------------------------------
def test_value_at_interpolates_and_never_extrapolates():
    steps, values = [100, 200, 300], [0.1, 0.3, 0.5]
    assert stats.value_at(steps, values, 150) == pytest.approx(0.2)
    assert stats.value_at(steps, values, 300) == pytest.approx(0.5)
    assert math.isnan(stats.value_at(steps, values, 50))
    assert math.isnan(stats.value_at(steps, values, 301))
    np.testing.assert_allclose(stats.value_at(steps, values, [100, 250]), [0.1, 0.4])


def test_value_at_sorts_and_drops_nan_points():
    assert stats.value_at([300, 100, 200], [0.5, 0.1, float("nan")], 200) == pytest.approx(0.3)


def test_auc_trapezoid_by_hand():
    steps, values = [100, 200, 300], [0.1, 0.3, 0.5]
    # 100*(0.1+0.3)/2 + 100*(0.3+0.5)/2 = 20 + 40 = 60 over a span of 200
    assert stats.auc(steps, values, normalize=False) == pytest.approx(60.0)
    assert stats.auc(steps, values) == pytest.approx(0.3)
    # up to 250: 20 + 50*(0.3+0.4)/2 = 37.5 over 150
    assert stats.auc(steps, values, budget=250, normalize=False) == pytest.approx(37.5)
    assert stats.auc(steps, values, budget=250) == pytest.approx(0.25)
    assert math.isnan(stats.auc(steps, values, budget=400))


def test_queries_to_reach_by_hand():
    steps, values = [100, 200, 300], [0.2, 0.4, 0.6]
    assert stats.queries_to_reach(steps, values, 0.5) == pytest.approx(250.0)
    assert stats.queries_to_reach(steps, values, 0.4) == pytest.approx(200.0)
    assert stats.queries_to_reach(steps, values, 0.1) == pytest.approx(100.0)  # already there at the first step
    assert stats.queries_to_reach(steps, values, 0.7) == math.inf
    # non-monotone: the first crossing counts
    assert stats.queries_to_reach([0, 10, 20, 30], [0.0, 1.0, 0.0, 1.0], 0.5) == pytest.approx(5.0)


def test_mean_curve_only_averages_runs_covering_a_point():
    grid, mean = stats.mean_curve([([0, 10], [0.0, 1.0]), ([0, 20], [0.0, 2.0])])
    np.testing.assert_allclose(grid, [0, 10, 20])
    np.testing.assert_allclose(mean, [0.0, 1.0, 2.0])


def test_grid_matrix_mean_equals_mean_curve():
    rng = np.random.default_rng(0)
    curves = [(np.sort(rng.choice(np.arange(0, 100, 5), 8, replace=False)), rng.random(8)) for _ in range(4)]
    grid, mean = stats.mean_curve(curves)
    np.testing.assert_allclose(stats.nanmean_rows(stats.curves_on_grid(curves, grid)), mean)


def test_batched_queries_to_reach_matches_scalar():
    rng = np.random.default_rng(1)
    grid = np.arange(10, 110, 10, dtype=float)
    means = rng.random((50, grid.size)).cumsum(axis=1) / 5
    means[::7, :2] = np.nan  # edges no run covers
    means[::5, -1] = np.nan
    targets = rng.uniform(0, 2.5, 50)
    expected = [stats.queries_to_reach(grid, m, t) for m, t in zip(means, targets)]
    np.testing.assert_allclose(stats.queries_to_reach_batch(grid, means, targets), expected)


# -- bootstrap -----------------------------------------------------------------------------------
def test_bootstrap_ci_two_values_by_hand():
    # resampled means of [0.5, 0.7] are 0.5, 0.6, 0.7 with probabilities 1/4, 1/2, 1/4: the 2.5% and
    # 97.5% quantiles are the extremes
    est = stats.bootstrap_ci([0.5, 0.7], reps=4000, seed=0)
    assert est == pytest.approx((0.6, 0.5, 0.7))


def test_bootstrap_ci_degenerate_and_nan():
    assert stats.bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
    assert stats.bootstrap_ci([0.3, float("nan")]) == pytest.approx((0.3, 0.3, 0.3))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    values = np.random.default_rng(3).normal(1.0, 0.5, 12)
    ours = stats.bootstrap_ci(values, reps=20000, seed=0)
    ref = scipy.stats.bootstrap(
        (values,), np.mean, n_resamples=20000, method="percentile", random_state=0
    ).confidence_interval
    assert ours.point == pytest.approx(values.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.02)
    assert ours.high == pytest.approx(ref.high, abs=0.02)


def test_percentile_interval_with_unreached_targets_is_infinite_not_nan():
    lo, hi = stats.percentile_interval([100.0] * 90 + [math.inf] * 10)
    assert lo == 100.0 and hi == math.inf


def test_stratified_resamples_stay_within_their_task():
    scores = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    res = stats.stratified_resamples(scores, 200, np.random.default_rng(0))
    assert res.shape == (200, 3, 2)
    assert set(np.unique(res[:, :, 0])) <= {1.0, 2.0, 3.0}
    assert set(np.unique(res[:, :, 1])) <= {10.0, 20.0, 30.0}


# -- robust aggregates ---------------------------------------------------------------------------
def test_iqm_by_hand():
    # 8 scores: drop the 2 lowest and 2 highest, average 3, 4, 5, 6
    assert stats.iqm([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)
    # runs x tasks matrices are pooled
    assert stats.iqm(np.array([[1, 2], [3, 4], [100, 5], [6, 7]])) == pytest.approx(4.5)
    # 4 scores: drop 1 each side
    assert stats.iqm([1, 2, 3, 50]) == pytest.approx(2.5)
    # 2 scores: nothing to drop
    assert stats.iqm([0.5, 0.7]) == pytest.approx(0.6)


def test_iqm_ci_brackets_point_and_is_reproducible():
    scores = np.random.default_rng(0).normal(size=(5, 3))
    a, b = stats.iqm_ci(scores, reps=500, seed=4), stats.iqm_ci(scores, reps=500, seed=4)
    assert a == b
    assert a.low <= a.point <= a.high
    assert stats.stratified_bootstrap_ci(scores, stats.iqm, reps=500).point == pytest.approx(a.point)


def test_probability_of_improvement_by_hand():
    # 0.8>0.5, 0.8>0.7, 0.6>0.5, 0.6<0.7: 3 of 4 pairs
    assert stats.probability_of_improvement([0.8, 0.6], [0.5, 0.7]) == pytest.approx(0.75)
    # ties count one half: (1,2)=0, (1,3)=0, (2,2)=0.5, (2,3)=0 -> 0.5/4
    assert stats.probability_of_improvement([1, 2], [2, 3]) == pytest.approx(0.125)
    assert stats.probability_of_improvement([1, 2], [1, 2]) == pytest.approx(0.5)
    # averaged over tasks: 0.75 and 1.0
    x, y = np.array([[0.8, 1.0], [0.6, 1.0]]), np.array([[0.5, 0.0], [0.7, 0.0]])
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.875)


def test_probability_of_improvement_matches_mann_whitney_u():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.3, 1, (6, 3)).round(1), rng.normal(0, 1, (5, 3)).round(1)  # rounding makes ties
    expected = np.mean(
        [scipy.stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic / 30 for t in range(3)]
    )
    assert stats.probability_of_improvement(x, y) == pytest.approx(expected)
    est = stats.probability_of_improvement_ci(x, y, reps=500)
    assert est.point == pytest.approx(expected) and 0 <= est.low <= est.point <= est.high <= 1
