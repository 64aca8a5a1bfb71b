"""Estimators for comparing strategies from a handful of seeds.

Why these: with 3-5 seeds per strategy, a bare mean hides how much it would move with other
seeds, so every number comes with a 95% percentile-bootstrap interval over runs. The robust
aggregates follow Agarwal et al., "Deep RL at the edge of the statistical precipice" (NeurIPS
2021) and reproduce the ``rliable`` package's definitions (``rliable`` itself cannot be used here:
its ``arch<8`` dependency fails to import with pandas 3):

* IQM: ``scipy.stats.trim_mean(scores, 0.25)`` over all runs x tasks (drops the lowest and highest
  ``floor(n/4)`` scores and averages the rest), as ``rliable.metrics.aggregate_iqm``;
* stratified bootstrap: runs are resampled with replacement independently within each task
  (column), as ``rliable.library.StratifiedBootstrap``;
* probability of improvement P(X > Y): per task, the Mann-Whitney U statistic divided by
  ``n_x * n_y`` (ties count one half), averaged over tasks, as
  ``rliable.metrics.probability_of_improvement``; its interval resamples X and Y independently.

Curve summaries work on one run's (step, value) curve, where step = reward queries:
values between logged steps are linearly interpolated, and nothing is extrapolated (NaN outside
the logged range), so a run that stopped early never gets a number at a budget it did not reach.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.stats

DEFAULT_REPS = 2000
DEFAULT_ALPHA = 0.05


class Estimate(NamedTuple):
    """A point estimate with a (1 - alpha) confidence interval."""

    point: float
    low: float
    high: float


# -- bootstrap machinery -------------------------------------------------------------------------
def percentile_interval(samples, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval. Linear interpolation between order statistics (numpy's
    default, as ``arch``); with infinite samples (e.g. a target never reached) the empirical
    quantile without interpolation, so the bound is +inf rather than NaN."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    method = "linear" if np.isfinite(samples).all() else "inverted_cdf"
    lo, hi = np.percentile(samples, q, method=method)
    return float(lo), float(hi)


def bootstrap_ci(
    values, statistic: Callable = np.mean, reps: int = DEFAULT_REPS, alpha: float = DEFAULT_ALPHA, seed: int = 0
) -> Estimate:
    """Percentile-bootstrap interval of ``statistic`` over iid ``values`` (one per run/seed).
    NaN values (runs without a number) are dropped first. ``statistic`` must accept ``axis=-1``."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(reps, values.size))
    boots = statistic(values[idx], axis=-1)
    return Estimate(float(statistic(values)), *percentile_interval(boots, alpha))


def stratified_resamples(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps x runs x tasks): runs (rows) resampled with replacement independently within each task
    (column), as rliable's ``StratifiedBootstrap``."""
    runs, tasks = scores.shape
    rows = rng.integers(0, runs, size=(reps, runs, tasks))
    return scores[rows, np.arange(tasks)]


def _as_matrix(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return scores[:, None] if scores.ndim == 1 else scores


def stratified_bootstrap_ci(
    scores, statistic: Callable, reps: int = DEFAULT_REPS, alpha: float = DEFAULT_ALPHA, seed: int = 0
) -> Estimate:
    """Interval of ``statistic(scores)`` for a (runs x tasks) matrix under the stratified bootstrap
    (``statistic`` is called once per resample: fine for anything small)."""
    scores = _as_matrix(scores)
    if scores.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    boots = [statistic(r) for r in stratified_resamples(scores, reps, np.random.default_rng(seed))]
    return Estimate(float(statistic(scores)), *percentile_interval(boots, alpha))


# -- robust aggregates ---------------------------------------------------------------------------
def iqm(scores, axis=None) -> float | np.ndarray:
    """Interquartile mean (25% trimmed mean) over all runs and tasks (``axis=None``)."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return float("nan")
    out = scipy.stats.trim_mean(
        scores.ravel() if axis is None else scores, proportiontocut=0.25, axis=0 if axis is None else axis
    )
    return float(out) if np.ndim(out) == 0 else out


def iqm_ci(scores, reps: int = DEFAULT_REPS, alpha: float = DEFAULT_ALPHA, seed: int = 0) -> Estimate:
    """IQM with a stratified-bootstrap interval (vectorised over resamples)."""
    scores = _as_matrix(scores)
    if scores.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    resamples = stratified_resamples(scores, reps, np.random.default_rng(seed))
    boots = iqm(resamples.reshape(reps, -1), axis=1)
    return Estimate(iqm(scores), *percentile_interval(boots, alpha))


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 for (..., runs_x, tasks) and (..., runs_y, tasks), averaged over tasks."""
    diff = x[..., :, None, :] - y[..., None, :, :]
    per_task = ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def probability_of_improvement(scores_x, scores_y) -> float:
    """P(X > Y) + P(X = Y)/2 per task (all run pairs), averaged over tasks."""
    x, y = _as_matrix(scores_x), _as_matrix(scores_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X has {x.shape[1]} tasks but Y has {y.shape[1]}")
    return float(_poi(x, y))


def probability_of_improvement_ci(
    scores_x, scores_y, reps: int = DEFAULT_REPS, alpha: float = DEFAULT_ALPHA, seed: int = 0
) -> Estimate:
    """Interval for P(X > Y), resampling X's runs and Y's runs independently within each task."""
    x, y = _as_matrix(scores_x), _as_matrix(scores_y)
    if x.size == 0 or y.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    boots = _poi(stratified_resamples(x, reps, rng), stratified_resamples(y, reps, rng))
    return Estimate(probability_of_improvement(x, y), *percentile_interval(boots, alpha))


# -- one run's curve -----------------------------------------------------------------------------
def _curve(steps, values) -> tuple[np.ndarray, np.ndarray]:
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def value_at(steps, values, budget) -> float | np.ndarray:
    """The curve's value at ``budget`` queries (linear interpolation; NaN outside the logged range)."""
    s, v = _curve(steps, values)
    at = np.asarray(budget, dtype=float)
    if s.size == 0:
        return np.full(at.shape, np.nan) if at.ndim else float("nan")
    out = np.interp(at, s, v)
    out = np.where((at < s[0]) | (at > s[-1]), np.nan, out)
    return out if at.ndim else float(out)


def auc(steps, values, budget: float | None = None, normalize: bool = True) -> float:
    """Area under the curve by the trapezoid rule from the first logged step to ``budget`` (default:
    the last step; the curve is interpolated at the budget). With ``normalize`` it is divided by the
    query span, i.e. the average reward over training, in reward units: comparable across studies."""
    s, v = _curve(steps, values)
    if s.size == 0:
        return float("nan")
    end = s[-1] if budget is None else float(budget)
    if end > s[-1] or end < s[0]:
        return float("nan")
    inside = s < end
    xs = np.append(s[inside], end)
    ys = np.append(v[inside], np.interp(end, s, v))
    if xs.size < 2 or xs[-1] == xs[0]:
        return float(ys[0]) if normalize else 0.0
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return area / float(xs[-1] - xs[0]) if normalize else area


def queries_to_reach(steps, values, target: float) -> float:
    """Reward queries at which the curve first reaches ``target``: the crossing is linearly
    interpolated between the last point below and the first point at/above it; the first step if the
    curve starts at/above it; +inf if it never does."""
    s, v = _curve(steps, values)
    if s.size == 0 or np.isnan(target):
        return float("nan")
    hit = np.nonzero(v >= target)[0]
    if hit.size == 0:
        return float("inf")
    i = int(hit[0])
    if i == 0:
        return float(s[0])
    s0, s1, v0, v1 = s[i - 1], s[i], v[i - 1], v[i]
    return float(s0 + (target - v0) * (s1 - s0) / (v1 - v0))


def mean_curve(curves: list[tuple], grid=None) -> tuple[np.ndarray, np.ndarray]:
    """Average of several runs' curves on ``grid`` (default: the union of their steps). At a grid
    point only runs whose logged range covers it contribute (no extrapolation)."""
    if grid is None:
        grid = np.unique(np.concatenate([np.asarray(s, dtype=float) for s, _ in curves])) if curves else np.array([])
    grid = np.asarray(grid, dtype=float)
    if not curves or grid.size == 0:
        return grid, np.full(grid.shape, np.nan)
    stacked = np.vstack([np.atleast_1d(value_at(s, v, grid)) for s, v in curves])
    with warnings.catch_warnings():  # all-NaN columns (no run covers a point) stay NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stacked, axis=0)
    return grid, mean


def mean_curve_queries_to_reach(curves: list[tuple], target: float) -> float:
    """Queries at which the seed-averaged curve first reaches ``target``. The mean curve is used
    rather than per-seed crossings because single-seed curves are noisy and cross early by chance."""
    grid, mean = mean_curve(curves)
    return queries_to_reach(grid, mean, target)


def curves_on_grid(curves: list[tuple], grid) -> np.ndarray:
    """(runs x grid) matrix of each curve interpolated on ``grid`` (NaN outside a run's range).
    Averaging rows of it gives the same mean curve as :func:`mean_curve` when ``grid`` contains every
    run's steps (a mean of piecewise-linear curves is piecewise linear on the union of their knots)."""
    grid = np.asarray(grid, dtype=float)
    return np.vstack([np.atleast_1d(value_at(s, v, grid)) for s, v in curves]) if curves else np.empty((0, grid.size))


def queries_to_reach_batch(grid, means: np.ndarray, target) -> np.ndarray:
    """:func:`queries_to_reach` for each row of ``means`` (R x grid) at once, for bootstraps; ``target``
    is a number or one per row. A row's NaNs (no run covering a grid point) can only be at its ends
    and are skipped as in the scalar version."""
    grid = np.asarray(grid, dtype=float)
    means = np.atleast_2d(np.asarray(means, dtype=float))
    target = np.broadcast_to(np.asarray(target, dtype=float), means.shape[:1])
    hit = np.nan_to_num(means, nan=-np.inf) >= target[:, None]
    first = hit.argmax(axis=1)
    rows = np.arange(means.shape[0])
    prev = np.maximum(first - 1, 0)
    v0, v1 = means[rows, prev], means[rows, first]
    s0, s1 = grid[prev], grid[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = s0 + (target - v0) * (s1 - s0) / (v1 - v0)
    out = np.where((first == 0) | np.isnan(v0), grid[first], crossing)
    return np.where(hit.any(axis=1), out, np.inf)


def nanmean_rows(matrix: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; all-NaN columns stay NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix, axis=0)


def bootstrap_mean_rows(matrix: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps x grid) means of ``matrix``'s rows resampled with replacement (NaN-aware)."""
    n = matrix.shape[0]
    idx = rng.integers(0, n, size=(reps, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix[idx], axis=1)


# -- t-based intervals and power, for the verdict ------------------------------------------------
# With three to five seeds a percentile bootstrap covers the mean far less often than its nominal
# 95% (with three values it can never reach past their range), and one strategy's own standard
# deviation rests on two degrees of freedom. So the verdict uses Student-t intervals with the
# seed-to-seed standard deviation pooled over a cell's strategies (as a one-way ANOVA does):
# exact under normal seed noise of equal spread, the assumption stated on the report.
def pooled_std(groups) -> tuple[float, int]:
    """(pooled standard deviation, its degrees of freedom) of several groups of values:
    ``sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1))`` over groups with at least two values."""
    num, dof = 0.0, 0
    for g in groups:
        g = np.asarray(g, dtype=float)
        g = g[~np.isnan(g)]
        if g.size >= 2:
            num += (g.size - 1) * g.var(ddof=1)
            dof += g.size - 1
    return (float(np.sqrt(num / dof)), dof) if dof else (float("nan"), 0)


def pooled_t_interval(values, sigma: float, dof: int, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Mean of ``values`` with ``± t(1 - alpha/2, dof) sigma / sqrt(n)``: ``sigma`` estimated with
    ``dof`` degrees of freedom (e.g. pooled over groups by :func:`pooled_std`)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    mean = float(x.mean())
    if dof < 1 or not np.isfinite(sigma):
        return Estimate(mean, float("nan"), float("nan"))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, dof) * sigma / np.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half)


def pooled_difference_interval(x, y, sigma: float, dof: int, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """``mean(x) - mean(y)`` with ``± t(1 - alpha/2, dof) sigma sqrt(1/n_x + 1/n_y)`` (the two-sample
    t interval; with ``sigma`` pooled over x and y alone it is scipy's ``ttest_ind``'s)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    diff = float(x.mean() - y.mean())
    if dof < 1 or not np.isfinite(sigma):
        return Estimate(diff, float("nan"), float("nan"))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, dof) * sigma * np.sqrt(1 / x.size + 1 / y.size))
    return Estimate(diff, diff - half, diff + half)


def power_of_t_test(difference: float, se: float, dof: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Probability that a two-sided t test at level ``alpha`` (standard error ``se`` on ``dof``
    degrees of freedom) rejects when the true difference is ``difference``: the noncentral t's
    ``P(|T| > t(1 - alpha/2, dof))`` with noncentrality ``difference / se``."""
    crit = scipy.stats.t.ppf(1 - alpha / 2, dof)
    lam = abs(difference) / se
    far_tail = scipy.stats.nct.cdf(-crit, dof, lam)  # scipy gives NaN where it underflows (lam >~ 8)
    return float(scipy.stats.nct.sf(crit, dof, lam) + (0.0 if np.isnan(far_tail) else far_tail))


def detectable_difference(se: float, dof: int, alpha: float = DEFAULT_ALPHA, power: float = 0.8) -> float:
    """Smallest true difference that a two-sided t test with standard error ``se`` on ``dof``
    degrees of freedom detects with probability ``power``: solved exactly on the noncentral t
    (the textbook ``(t(1 - alpha/2) + t(power)) se`` is a little below it at few degrees of freedom)."""
    if dof < 1 or not np.isfinite(se) or se <= 0:
        return float("nan")
    guess = (scipy.stats.t.ppf(1 - alpha / 2, dof) + scipy.stats.t.ppf(power, dof)) * se
    return float(scipy.optimize.brentq(lambda d: power_of_t_test(d, se, dof, alpha) - power, 0.5 * guess, 3 * guess))


def minimum_detectable_difference(
    sigma: float, n_x: int, n_y: int, dof: int | None = None, alpha: float = DEFAULT_ALPHA, power: float = 0.8
) -> float:
    """Smallest true difference of means that a two-sided two-sample t test at level ``alpha``
    detects with probability ``power``, for seed-to-seed standard deviation ``sigma`` estimated with
    ``dof`` degrees of freedom (default ``n_x + n_y - 2``): :func:`detectable_difference` at the
    standard error ``sigma * sqrt(1/n_x + 1/n_y)``."""
    dof = n_x + n_y - 2 if dof is None else dof
    if n_x < 1 or n_y < 1 or dof < 1 or not np.isfinite(sigma):
        return float("nan")
    return detectable_difference(sigma * np.sqrt(1 / n_x + 1 / n_y), dof, alpha, power)


# -- randomised complete blocks: the seed as block ---------------------------------------------
# When every arm of a cell ran the same seeds and a seed fixes what the arms share (LoRA
# initialisation, prompts, noise), a seed is a block: the model y_ij = mu + block_i + arm_j + e_ij
# (two-way ANOVA without interaction). An arm's difference to the baseline is the mean of its
# within-seed differences, and its standard error rests on the residual variance pooled over arms,
# sigma_e^2 = sum(e_ij^2) / ((a - 1)(b - 1)), free of the seed-to-seed spread the arms share.
def block_residual_std(table) -> tuple[float, int]:
    """(residual standard deviation, its degrees of freedom) of a complete (blocks x arms) table:
    ``e_ij = y_ij - mean_i. - mean_.j + mean_..``, ``sqrt(sum e^2 / ((a - 1)(b - 1)))``."""
    y = np.asarray(table, dtype=float)
    b, a = y.shape
    dof = (a - 1) * (b - 1)
    if dof < 1 or np.isnan(y).any():
        return float("nan"), 0
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    return float(np.sqrt((resid**2).sum() / dof)), dof


def blocked_difference_interval(x, y, sigma: float, dof: int, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """``mean(x_i - y_i)`` over blocks (x and y aligned by block) with
    ``± t(1 - alpha/2, dof) sigma sqrt(2 / b)``, ``sigma`` the residual std of :func:`block_residual_std`."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if d.size == 0 or np.isnan(d).any():
        return Estimate(float("nan"), float("nan"), float("nan"))
    diff = float(d.mean())
    if dof < 1 or not np.isfinite(sigma):
        return Estimate(diff, float("nan"), float("nan"))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, dof) * sigma * np.sqrt(2 / d.size))
    return Estimate(diff, diff - half, diff + half)
