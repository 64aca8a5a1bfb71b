"""The verdict's statistics against independent computations, and its sentences on synthetic runs.

* the t intervals equal scipy's (``scipy.stats.t.interval``, ``ttest_ind(...).confidence_interval``);
* on simulated seeds with a known true difference, the 95% intervals cover it about 95% of the time;
* the minimum detectable difference has 80% power on the noncentral t, and a pooled two-sample or
  blocked t test at that true difference detects it 80% of the time;
* with arms that share seeds, the blocked analysis (residual of the seed x strategy layout, equal to
  a least-squares reference) covers at 95% with and without a seed effect;
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
def test_minimum_detectable_difference_has_its_power(n):
    """Solved on the noncentral t (near the textbook t-quantile formula); then, four
    strategies x n seeds at that true difference, the pooled test detects it 80% of the time."""
    sigma, k = 0.3, 4
    nu = k * (n - 1)
    formula = (scipy.stats.t.ppf(0.975, nu) + scipy.stats.t.ppf(0.8, nu)) * sigma * np.sqrt(2 / n)
    mde = stats.minimum_detectable_difference(sigma, n, n, nu)
    assert mde == pytest.approx(formula, rel=0.05)  # the textbook formula is close, not exact
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
    assert exact == pytest.approx(0.8, abs=1e-6)


# -- synthetic studies -----------------------------------------------------------------------------
STEPS = [0, 32, 64, 96, 128, 160]


def _runs(
    cell: tuple[str, str],
    gains: dict[str, float],
    noise: float = 0.05,
    seeds=(0, 1, 2),
    base: float = 6.0,
    slope_seed: int = 0,
    seed_effect: float = 0.0,
    truth_follows: float = 0.5,
):
    """Held-out curves of one cell: every run starts at ``base`` (the same noise), rises linearly to
    ``base + gain`` plus seeded noise (plus a shared effect of each seed, sd ``seed_effect``, common
    to its arms); the ground truth follows ``truth_follows`` of it."""
    algorithm, reward = cell
    rng = np.random.default_rng(slope_seed)
    shared = {seed: rng.normal(0, seed_effect) if seed_effect else 0.0 for seed in seeds}
    rows = []
    for strategy, gain in gains.items():
        for seed in seeds:
            end = gain + shared[seed] + rng.normal(0, noise)
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
                        value=0.5 + truth_follows * (value - base),
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


def test_an_arm_that_learned_where_the_baseline_did_not_is_reported(synthetic):
    """AlignProp's baseline, phrase and DiffExp gain nothing, CFG +0.3: CFG is reported with its
    gain and its difference; the others are "no comparison" (never while an arm's gain is above 0)."""
    _, verdict = synthetic
    base = _row(verdict, "alignprop", "baseline")
    assert not base["baseline_learned"]
    assert base["verdict"].startswith("the baseline did not learn at this budget")
    cfg = _row(verdict, "alignprop", "cfg")
    assert cfg["gain_low"] > 0 and cfg["diff_low"] > 0
    assert cfg["verdict"].startswith("CFG only learned where the baseline did not: +0.")
    assert "over the baseline at 160 queries" in cfg["verdict"]
    for strategy in ("phrase", "diffexp"):
        row = _row(verdict, "alignprop", strategy)
        assert row["gain_low"] <= 0
        assert row["verdict"].endswith("learned at 160 queries; no comparison is possible")
    for _, row in verdict.iterrows():
        assert not ("no comparison is possible" in row["verdict"] and row["gain_low"] > 0), row["verdict"]
    lines = cell_sentences(verdict)
    assert len(lines) == 2 and lines[0].startswith("DDPO · aesthetic")
    assert "CFG only learned where the baseline did not" in lines[1] and "no comparison" not in lines[1]


def test_minimum_detectable_difference_uses_the_blocked_residual_std(synthetic):
    """Every arm ran seeds 0-2: the detectable difference rests on the seed x strategy residual
    (6 degrees of freedom), the gain intervals on the pooled seed std (8)."""
    metrics, verdict = synthetic
    finals = metrics[
        (metrics["metric"] == "eval_reward_mean") & (metrics["step"] == 160) & (metrics["algorithm"] == "ddpo")
    ]
    sigma, dof = stats.pooled_std([g["value"].to_numpy() for _, g in finals.groupby("strategy")])
    table = finals.pivot(index="seed", columns="strategy", values="value").to_numpy()
    resid, resid_dof = reference_block_residual(table)
    cfg = _row(verdict, "ddpo", "cfg")
    assert dof == 8 and cfg["dof"] == 8 and cfg["pooled_std"] == pytest.approx(sigma)
    assert cfg["analysis"] == "blocked by seed" and resid_dof == 6
    assert cfg["residual_std"] == pytest.approx(resid)
    assert cfg["mde"] == pytest.approx(stats.detectable_difference(resid * np.sqrt(2 / 3), 6))


# -- blocked by seed -------------------------------------------------------------------------------
def reference_block_residual(table: np.ndarray) -> tuple[float, int]:
    """Residual std of y_ij = mu + seed_i + arm_j + e by least squares on dummy columns (an
    independent route to the two-way ANOVA's residual)."""
    b, a = table.shape
    rows = []
    for i in range(b):
        for j in range(a):
            rows.append([1.0] + [float(i == k) for k in range(1, b)] + [float(j == k) for k in range(1, a)])
    X, y = np.array(rows), table.ravel()
    _, residual, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - rank
    return float(np.sqrt(residual[0] / dof)), int(dof)


def test_block_residual_std_is_the_least_squares_residual():
    table = np.random.default_rng(3).normal(0, 1, (5, 4)) + np.arange(5)[:, None]
    assert stats.block_residual_std(table) == pytest.approx(reference_block_residual(table))


@pytest.mark.parametrize(("seeds", "seed_effect"), [(3, 0.0), (3, 0.5), (5, 0.5)])
def test_blocked_intervals_cover_a_known_difference_with_or_without_a_seed_effect(seeds, seed_effect):
    """Four arms x seeds, a shared seed effect or none: the blocked interval covers the true
    difference about 95% of the time, and its test detects the stated detectable difference about
    80% of the time (the noncentral t's power at it is 0.80)."""
    rng = np.random.default_rng(seeds + int(10 * seed_effect))
    sigma, trials, true_diff = 0.1, 4000, 0.15
    means = np.array([0.0, true_diff, 0.0, 0.0])
    covered = detected = 0
    se = sigma * np.sqrt(2 / seeds)
    mde = stats.detectable_difference(se, 3 * (seeds - 1))
    assert stats.power_of_t_test(mde, se, 3 * (seeds - 1)) == pytest.approx(0.8, abs=1e-6)
    for _ in range(trials):
        block = rng.normal(0, seed_effect, (seeds, 1)) if seed_effect else 0.0
        table = means + block + rng.normal(0, sigma, (seeds, 4))
        s, dof = stats.block_residual_std(table)
        est = stats.blocked_difference_interval(table[:, 1], table[:, 0], s, dof)
        covered += est.low <= true_diff <= est.high
        at_mde = table.copy()
        at_mde[:, 2] += mde
        s2, _ = stats.block_residual_std(at_mde)
        test = stats.blocked_difference_interval(at_mde[:, 2], at_mde[:, 0], s2, dof)
        detected += test.low > 0
    assert 0.935 <= covered / trials <= 0.965, covered / trials
    assert detected / trials == pytest.approx(0.8, abs=0.025)


def test_a_study_whose_arms_share_seeds_is_compared_within_seed():
    """A seed effect (sd 0.15) shared by the arms, residual noise 0.03, DiffExp +0.1: the
    blocked interval (equal to the least-squares reference) finds it, the unpaired one cannot."""
    rows = _runs(
        ("alignprop", "r"),
        {"baseline": 0.5, "cfg": 0.5, "phrase": 0.5, "diffexp": 0.6},
        noise=0.03,
        seed_effect=0.15,
        slope_seed=4,
    )
    metrics = study_from_frames(pd.DataFrame(rows)).metrics
    verdict = verdict_table(metrics, reps=100)
    d = _row(verdict, "alignprop", "diffexp")
    finals = metrics[(metrics["metric"] == "eval_reward_mean") & (metrics["step"] == 160)]
    table = finals.pivot(index="seed", columns="strategy", values="value")[["baseline", "cfg", "phrase", "diffexp"]]
    resid, dof = reference_block_residual(table.to_numpy())
    diffs = (table["diffexp"] - table["baseline"]).to_numpy()
    half = scipy.stats.t.ppf(0.975, dof) * resid * np.sqrt(2 / 3)
    assert d["analysis"] == "blocked by seed"
    assert (d["diff"], d["diff_low"], d["diff_high"]) == pytest.approx(
        (diffs.mean(), diffs.mean() - half, diffs.mean() + half)
    )
    assert d["diff_low"] > 0 and d["verdict"].startswith("DiffExp higher than the baseline")
    unpaired = stats.pooled_difference_interval(table["diffexp"], table["baseline"], d["pooled_std"], d["dof"])
    assert unpaired.low < 0 < unpaired.high  # what the verdict said before it knew the design
    assert "DiffExp higher than the baseline" in cell_sentences(verdict)[0]


def test_arms_on_different_seeds_fall_back_to_the_unpaired_interval():
    rows = _runs(("ddpo", "r"), {"baseline": 0.5}, seeds=(0, 1, 2))
    rows += _runs(("ddpo", "r"), {"diffexp": 0.6}, seeds=(3, 4, 5), slope_seed=2)
    verdict = verdict_table(study_from_frames(pd.DataFrame(rows)).metrics, reps=100)
    d = _row(verdict, "ddpo", "diffexp")
    assert d["analysis"] == "unpaired"
    assert d["mde"] == pytest.approx(stats.minimum_detectable_difference(d["pooled_std"], 3, 3, d["dof"]))


def test_a_reward_that_rises_while_the_ground_truth_does_not_is_flagged():
    rows = _runs(("ddpo", "r"), {"baseline": 0.0, "diffexp": 0.5}, truth_follows=0.0)
    verdict = verdict_table(study_from_frames(pd.DataFrame(rows)).metrics, reps=100)
    d = _row(verdict, "ddpo", "diffexp")
    assert d["verdict"].startswith("DiffExp learned where the baseline did not")
    assert "ground truth" in d["verdict"] and "reward hacking" in d["verdict"]
    honest = verdict_table(study_from_frames(pd.DataFrame(_runs(("ddpo", "r"), {"baseline": 0.5}))).metrics, reps=100)
    assert "reward hacking" not in honest.iloc[0]["verdict"]


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


def test_the_flag_reads_the_ground_truth_the_reward_declares():
    """The embedded aesthetic reward declares eval_gt_aesthetic: a flat prompt-following ground
    truth beside a rising aesthetic one is no sign of hacking; for the alignment reward it is."""

    def study(reward):
        rows = _runs(("ddpo", reward), {"baseline": 0.5}, truth_follows=0.0)  # eval_gt_accuracy flat
        rows += [{**r, "metric": "eval_gt_aesthetic"} for r in rows if r["metric"] == "eval_reward_mean"]
        return verdict_table(study_from_frames(pd.DataFrame(rows)).metrics, reps=100).iloc[0]

    aesthetic = study("embedded_aesthetic")
    assert aesthetic["gt_metric"] == "eval_gt_aesthetic" and "reward hacking" not in aesthetic["verdict"]
    alignment = study("embedded_alignment")
    assert alignment["gt_metric"] == "eval_gt_accuracy" and "reward hacking" in alignment["verdict"]
