"""The verdict's statistics against independent computations, and its sentences on synthetic runs.

* the t intervals equal scipy's (``scipy.stats.t.interval``, ``ttest_ind(...).confidence_interval``);
* on simulated seeds with a known true difference, the 95% intervals cover it about 95% of the time;
* the minimum detectable difference is the stated formula, and a pooled two-sample t test at that
  true difference detects it as often as the exact noncentral-t power says (about 80%);
* on synthetic studies the verdict names what was built into them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from diffexp.reporting import stats
from diffexp.reporting.load import study_from_frames
from diffexp.reporting.verdict import cell_sentences, display_table, outcome_table, verdict_table


def test_t_interval_with_the_samples_own_std_is_scipys():
    x = np.random.default_rng(0).normal(1.0, 0.3, 5)
    est = stats.pooled_t_interval(x, x.std(ddof=1), len(x) - 1)
    low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert (est.point, est.low, est.high) == pytest.approx((x.mean(), low, high))


def test_difference_interval_pooled_over_two_groups_is_scipys():
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 0.3, 3), rng.normal(0.5, 0.3, 4)
    sigma, dof = stats.pooled_std([x, y])
    est = stats.pooled_difference_interval(x, y, sigma, dof)
    ci = scipy.stats.ttest_ind(x, y, equal_var=True).confidence_interval(0.95)
    assert dof == 5 and (est.point, est.low, est.high) == pytest.approx((x.mean() - y.mean(), ci.low, ci.high))


def test_pooled_std_by_hand():
    # groups (1, 3) and (2, 4, 6): squared deviations 2 and 8 over 1 + 2 degrees of freedom
    assert stats.pooled_std([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]]) == (pytest.approx(np.sqrt(10 / 3)), 3)


@pytest.mark.parametrize("n", [3, 5])
def test_intervals_cover_a_known_difference_at_the_nominal_rate(n):
    """Four strategies x n seeds, equal seed noise: the pooled intervals of a gain and of a
    difference cover the truth about 95% of the time."""
    rng = np.random.default_rng(n)
    true_gain, true_diff, sigma, trials = 0.3, 0.4, 0.25, 4000
    gains = np.array([0.3, 0.7, 0.3, 0.3])  # baseline, then the strategies; the second differs by +0.4
    finals = 6.0 + gains[None, :, None] + rng.normal(0, sigma, (trials, 4, n))
    covered_gain = covered_diff = 0
    for f in finals:
        s, dof = stats.pooled_std(f)
        gain = stats.pooled_t_interval(f[0] - 6.0, s, dof)
        diff = stats.pooled_difference_interval(f[1], f[0], s, dof)
        covered_gain += gain.low <= true_gain <= gain.high
        covered_diff += diff.low <= true_diff <= diff.high
    # binomial standard error at 4000 trials is 0.0034: 0.935-0.965 is about 4.5 of them
    assert 0.935 <= covered_gain / trials <= 0.965, covered_gain / trials
    assert 0.935 <= covered_diff / trials <= 0.965, covered_diff / trials


@pytest.mark.parametrize("n", [3, 5])
def test_minimum_detectable_difference_is_the_stated_formula_and_has_its_power(n):
    """The formula, from scipy's quantiles; then, four strategies x n seeds at that true difference,
    the pooled test detects it as often as the exact noncentral-t power says (about 80%)."""
    sigma, k = 0.3, 4
    nu = k * (n - 1)
    formula = (scipy.stats.t.ppf(0.975, nu) + scipy.stats.t.ppf(0.8, nu)) * sigma * np.sqrt(2 / n)
    mde = stats.minimum_detectable_difference(sigma, n, n, nu)
    assert mde == pytest.approx(formula)
    lam = mde / (sigma * np.sqrt(2 / n))
    crit = scipy.stats.t.ppf(0.975, nu)
    exact = scipy.stats.nct.sf(crit, nu, lam) + scipy.stats.nct.cdf(-crit, nu, lam)
    rng = np.random.default_rng(7)
    trials, detected = 4000, 0
    for f in rng.normal(0, sigma, (trials, k, n)) + np.array([0, mde, 0, 0])[:, None]:
        s, dof = stats.pooled_std(f)
        est = stats.pooled_difference_interval(f[1], f[0], s, dof)
        detected += est.low > 0 or est.high < 0
    assert detected / trials == pytest.approx(exact, abs=0.025)
    assert 0.75 <= exact <= 0.81  # the t-quantile formula aims at 80%; its exact power is a little below


# -- synthetic studies -----------------------------------------------------------------------------
STEPS = [0, 32, 64, 96, 128, 160]


def _runs(
    cell: tuple[str, str],
    gains: dict[str, float],
    noise: float = 0.05,
    seeds=(0, 1, 2),
    base: float = 6.0,
    slope_seed: int = 0,
):
    """Held-out curves of one cell: every run starts at ``base`` (the same noise), rises linearly to
    ``base + gain`` plus seeded noise; the ground truth follows half of it."""
    algorithm, reward = cell
    rng = np.random.default_rng(slope_seed)
    rows = []
    for strategy, gain in gains.items():
        for seed in seeds:
            end = gain + rng.normal(0, noise)
            for step in STEPS:
                value = base + end * step / STEPS[-1] + (rng.normal(0, noise / 3) if step else 0.0)
                run_id = f"{algorithm}-{reward}-{strategy}-{seed}"
                rows.append(
                    dict(
                        run_id=run_id,
                        algorithm=algorithm,
                        strategy=strategy,
                        seed=str(seed),
                        reward=reward,
                        metric="eval_reward_mean",
                        step=step,
                        value=value,
                    )
                )
                rows.append(
                    dict(
                        run_id=run_id,
                        algorithm=algorithm,
                        strategy=strategy,
                        seed=str(seed),
                        reward=reward,
                        metric="eval_gt_accuracy",
                        step=step,
                        value=0.5 + 0.5 * (value - base),
                    )
                )
    return rows


@pytest.fixture(scope="module")
def synthetic():
    rows = _runs(("ddpo", "embedded_aesthetic"), {"baseline": 0.5, "cfg": 0.5, "phrase": 0.52, "diffexp": 1.0})
    rows += _runs(
        ("alignprop", "embedded_alignment"), {"baseline": 0.0, "cfg": 0.3, "phrase": 0.0, "diffexp": 0.0}, slope_seed=1
    )
    study = study_from_frames(pd.DataFrame(rows))
    return study.metrics, verdict_table(study.metrics, reps=500)


def _row(verdict, algorithm, strategy):
    r = verdict[(verdict["algorithm"] == algorithm) & (verdict["strategy"] == strategy)]
    assert len(r) == 1
    return r.iloc[0]


def test_verdict_has_every_cell_and_arm(synthetic):
    _, verdict = synthetic
    assert len(verdict) == 8
    assert set(zip(verdict["algorithm"], verdict["strategy"])) == {
        (a, s) for a in ("ddpo", "alignprop") for s in ("baseline", "cfg", "phrase", "diffexp")
    }
    assert (verdict["budget"] == 160).all() and (verdict["n_runs"] == 3).all()


def test_verdict_finds_the_built_in_difference(synthetic):
    _, verdict = synthetic
    base = _row(verdict, "ddpo", "baseline")
    assert base["baseline_learned"] and base["verdict"].startswith("the baseline learned: +0.")
    assert base["gain_low"] <= 0.5 <= base["gain_high"]
    diffexp = _row(verdict, "ddpo", "diffexp")
    assert diffexp["diff_low"] > 0 and diffexp["diff_low"] <= 0.5 <= diffexp["diff_high"]
    assert (
        diffexp["verdict"].startswith("DiffExp higher than the baseline by 0.")
        and "at 160 queries" in diffexp["verdict"]
    )
    cfg = _row(verdict, "ddpo", "cfg")
    assert cfg["verdict"].startswith("no difference detected at 160 queries")
    assert 0 < cfg["mde"] < 0.5  # seeds this quiet detect less than the built-in +0.5
    # DiffExp's mean curve (0 -> +1.0) reaches the baseline's final +0.5 about halfway
    assert diffexp["queries"] == pytest.approx(80, abs=16)
    assert diffexp["queries_low"] <= diffexp["queries"] <= diffexp["queries_high"]


def test_no_comparison_when_the_baseline_did_not_learn(synthetic):
    _, verdict = synthetic
    base = _row(verdict, "alignprop", "baseline")
    assert not base["baseline_learned"]
    assert base["verdict"].startswith("the baseline did not learn at this budget")
    for strategy in ("cfg", "phrase", "diffexp"):  # even CFG's real gain is not compared
        assert (
            _row(verdict, "alignprop", strategy)["verdict"]
            == "the baseline did not learn at this budget; no comparison is possible"
        )
    lines = cell_sentences(verdict)
    assert len(lines) == 2 and "no comparison is possible" in lines[1] and lines[0].startswith("DDPO · aesthetic")


def test_minimum_detectable_difference_uses_the_pooled_seed_std(synthetic):
    metrics, verdict = synthetic
    finals = metrics[
        (metrics["metric"] == "eval_reward_mean") & (metrics["step"] == 160) & (metrics["algorithm"] == "ddpo")
    ]
    sigma, dof = stats.pooled_std([g["value"].to_numpy() for _, g in finals.groupby("strategy")])
    cfg = _row(verdict, "ddpo", "cfg")
    assert dof == 8 and cfg["dof"] == 8 and cfg["pooled_std"] == pytest.approx(sigma)
    assert cfg["mde"] == pytest.approx(stats.minimum_detectable_difference(sigma, 3, 3, 8))


def test_display_and_outcomes(synthetic):
    metrics, verdict = synthetic
    shown = display_table(verdict)
    assert list(shown["Cell"].unique()) == ["DDPO · aesthetic", "AlignProp · alignment"]
    assert shown.iloc[0]["Δ vs baseline"] == "–" and shown.iloc[3]["Δ vs baseline"].startswith("+0.5")
    outcomes = outcome_table(metrics)
    gt = outcomes[(outcomes["algorithm"] == "ddpo") & (outcomes["strategy"] == "diffexp")].iloc[0]
    assert gt["metric"] == "eval_gt_accuracy" and gt["gain"] == pytest.approx(0.5, abs=0.06)


def test_a_run_without_a_base_model_evaluation_gets_no_gain():
    rows = [r for r in _runs(("ddpo", "r"), {"baseline": 0.5, "diffexp": 0.6}) if r["step"] > 0]
    verdict = verdict_table(study_from_frames(pd.DataFrame(rows)).metrics, reps=100)
    assert verdict["gain"].isna().all()
    assert verdict.iloc[0]["verdict"].startswith("no base-model evaluation")
