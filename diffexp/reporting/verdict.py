"""The verdict: does an exploration strategy beat the baseline on the evaluation set, and by how much?

Per cell (algorithm x task) the evaluation-set curves of every run share their prompts and noise,
and start with the base model at 0 queries, so a run's *gain* (its value minus the base model's) is
a paired difference. At the cell's final budget (the smallest last evaluation over its runs) the
verdict reports, per strategy, with ``s`` the cell's seed-to-seed standard deviation pooled over its
strategies (``nu = sum(n_i - 1)`` degrees of freedom; it assumes the strategies' seed noise has the
same spread, and each strategy's own standard deviation is shown beside it):

* the gain over the base model, ``mean ± t(0.975, nu) s / sqrt(n)``; the baseline *learned* when
  every seed's gain is positive and that interval excludes 0;
* the difference to the baseline. When every arm ran the same seeds (a seed fixes the LoRA
  initialisation, the prompts and the noise every arm shares), the seed is a block: the mean of the
  within-seed differences ``± t(0.975, nu_e) s_e sqrt(2/b)``, with ``s_e`` the residual std of the
  two-way (seed x strategy) layout on ``nu_e = (a - 1)(b - 1)`` degrees of freedom
  (:func:`stats.block_residual_std`). Otherwise the unpaired ``± t(0.975, nu) s sqrt(1/n + 1/n_b)``.
  The ``analysis`` column says which; no correction for comparing several strategies with one baseline;
* the minimum detectable difference: the smallest true difference that the same test detects with
  80% power, solved on the noncentral t (:func:`stats.detectable_difference`);
* reward queries to reach the baseline's final mean value (mean curves, interpolated between
  evaluations), with a percentile-bootstrap interval over seeds;
* one sentence saying what that means: at which budget; an arm that learned where the baseline did
  not, with its difference; and a flag where a learned reward rose while the cell's ground truth
  (``eval_gt_*``) did not, the first sign of reward hacking.

Why t intervals: see :mod:`diffexp.reporting.stats`; the estimators are tested against scipy and
by simulation (coverage, power) in ``tests/reporting/test_verdict.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from diffexp.reporting import stats
from diffexp.reporting.formatting import decimals, fmt, fmt_ci
from diffexp.reporting.labels import BASELINE, cell_label, strategy_label
from diffexp.reporting.tables import Curve, efficiency_table, panel_curves

HELDOUT_METRIC = "eval_reward_mean"
COLUMNS = [
    "algorithm",
    "task",
    "strategy",
    "metric",
    "n_runs",
    "budget",
    "base",
    "final",
    "final_low",
    "final_high",
    "gain",
    "gain_low",
    "gain_high",
    "gain_min",
    "seeds_gained",
    "seed_std",
    "pooled_std",
    "dof",
    "baseline_learned",
    "diff",
    "diff_low",
    "diff_high",
    "mde",
    "analysis",
    "residual_std",
    "gt_metric",
    "gt_gain",
    "gt_gain_low",
    "gt_gain_high",
    "queries",
    "queries_low",
    "queries_high",
    "verdict",
]


def run_values(curves: list[Curve], budget: float) -> tuple[np.ndarray, np.ndarray]:
    """(value at ``budget``, value at 0 queries) of each run (NaN where a run has no such point)."""
    final = np.array([stats.value_at(*c.xy, budget) for c in curves], dtype=float)
    base = np.array([c.values[c.steps == 0][0] if (c.steps == 0).any() else np.nan for c in curves], dtype=float)
    return final, base


def learned(gains: np.ndarray, sigma: float, dof: int) -> bool:
    """Every seed gained, and the (pooled) t interval of the mean gain lies above 0."""
    gains = gains[~np.isnan(gains)]
    est = stats.pooled_t_interval(gains, sigma, dof)
    return bool(gains.size >= 2 and (gains > 0).all() and est.low > 0)


BLOCKED, UNPAIRED = "blocked by seed", "unpaired"


def learned_arm(row: dict) -> bool:
    """An arm learned: every seed gained and its gain interval lies above 0."""
    return bool(row["gain_low"] > 0 and row["seeds_gained"] == row["n_runs"] >= 2)


def sentence(strategy: str, row: dict, digits: int) -> str:
    """The plain-language verdict of one row."""
    budget = f"{row['budget']:,.0f} queries"
    gain = fmt_ci(row["gain"], row["gain_low"], row["gain_high"], digits)
    if math.isnan(row["gain"]):
        return "no base-model evaluation (0 queries) was logged, so no gain can be measured"
    flag = ground_truth_flag(row, digits)
    if strategy == BASELINE:
        if row["baseline_learned"]:
            return f"the baseline learned: {_signed(gain)} over the base model at {budget}{flag}"
        why = "; not every seed gained" if row["gain_low"] > 0 else ""
        return f"the baseline did not learn at this budget ({_signed(gain)} over the base model at {budget}{why})"
    diff = fmt_ci(row["diff"], row["diff_low"], row["diff_high"], digits)
    label = strategy_label(strategy)
    if not row["baseline_learned"]:
        if learned_arm(row):
            return (
                f"{label} learned where the baseline did not: {_signed(gain)} over the base model and "
                f"{_signed(diff)} over the baseline at {budget}{flag}"
            )
        return f"neither the baseline nor {label} learned at {budget}; no comparison is possible"
    if row["diff_low"] > 0:
        return f"{label} higher than the baseline by {diff} at {budget}{flag}"
    if row["diff_high"] < 0:
        lower = fmt_ci(-row["diff"], -row["diff_high"], -row["diff_low"], digits)
        return f"{label} lower than the baseline by {lower} at {budget}"
    return (
        f"no difference detected at {budget} ({_signed(diff)}; this design detects a difference of "
        f"{fmt(row['mde'], digits)} or more)"
    )


def ground_truth_flag(row: dict, digits: int) -> str:
    """For an arm whose learned reward rose: a warning when the cell's ground truth did not."""
    if not isinstance(row.get("gt_metric"), str) or not row["gain_low"] > 0 or row["gt_gain_low"] > 0:
        return ""
    from diffexp.reporting.labels import metric_label

    gt = fmt_ci(row["gt_gain"], row["gt_gain_low"], row["gt_gain_high"], digits)
    return (
        f"; but its ground truth ({metric_label(row['gt_metric'])}) did not rise ({_signed(gt)}): "
        "a learned reward rising alone is the first sign of reward hacking"
    )


def _signed(text: str) -> str:
    return text if text.startswith("-") or text == "–" else "+" + text


def seed_blocks(values: dict[str, tuple[np.ndarray, np.ndarray]], seeds: dict[str, list[str]]) -> list[str] | None:
    """The seeds, in order, when every arm has a final value at exactly the same seeds (at least two,
    each once): a randomised complete block design. Else None (the unpaired analysis)."""
    sets = []
    for strategy, (final, _) in values.items():
        own = [seed for seed, v in zip(seeds[strategy], final) if not np.isnan(v)]
        if len(set(own)) != len(own):
            return None
        sets.append(frozenset(own))
    if len(sets) < 2 or len(set(sets)) != 1 or len(sets[0]) < 2:
        return None
    return sorted(sets[0], key=lambda s: (pd.to_numeric(s, errors="coerce"), s))


def by_seed(final: np.ndarray, seeds: list[str], order: list[str]) -> np.ndarray:
    lookup = {seed: v for seed, v in zip(seeds, final) if not np.isnan(v)}
    return np.array([lookup[seed] for seed in order], dtype=float)


def verdict_table(
    metrics: pd.DataFrame, metric: str = HELDOUT_METRIC, reps: int = stats.DEFAULT_REPS, seed: int = 0
) -> pd.DataFrame:
    """One row per cell x strategy (baseline first): the verdict's numbers and sentence."""
    rows = []
    efficiency = efficiency_table(metrics, metric, reps=reps, seed=seed).set_index(["algorithm", "task", "strategy"])
    truths = ground_truths(metrics)
    for (algorithm, task), by_strategy in panel_curves(metrics, metric).items():
        budget = min(c.steps.max() for curves in by_strategy.values() for c in curves)
        values = {s: run_values(curves, budget) for s, curves in by_strategy.items()}
        seeds = {s: [c.seed for c in curves] for s, curves in by_strategy.items()}
        finals = {s: v[0] for s, v in values.items()}
        seed_std, dof = stats.pooled_std(finals.values())
        blocks = seed_blocks(values, seeds) if BASELINE in values else None
        if blocks is not None:
            table = np.column_stack([by_seed(finals[s], seeds[s], blocks) for s in values])
            resid_std, resid_dof = stats.block_residual_std(table)
        else:
            resid_std, resid_dof = float("nan"), 0
        base_gains = values[BASELINE][0] - values[BASELINE][1] if BASELINE in values else np.array([np.nan])
        base_learned = learned(base_gains, seed_std, dof)
        digits = decimals([np.nanmean(v) for v in finals.values()] + [seed_std])
        digits = max(digits, 2)
        gt = truths.get((algorithm, task), {})
        for strategy, (final, base) in values.items():
            gains = final - base
            est_final, est_gain = (
                stats.pooled_t_interval(final, seed_std, dof),
                stats.pooled_t_interval(gains, seed_std, dof),
            )
            if strategy == BASELINE or BASELINE not in finals:
                diff = stats.Estimate(float("nan"), float("nan"), float("nan"))
                mde, analysis = float("nan"), ""
            elif blocks is not None:
                diff = stats.blocked_difference_interval(
                    by_seed(final, seeds[strategy], blocks),
                    by_seed(finals[BASELINE], seeds[BASELINE], blocks),
                    resid_std,
                    resid_dof,
                )
                mde = stats.detectable_difference(resid_std * np.sqrt(2 / len(blocks)), resid_dof)
                analysis = BLOCKED
            else:
                diff = stats.pooled_difference_interval(final, finals[BASELINE], seed_std, dof)
                mde = stats.minimum_detectable_difference(
                    seed_std, int((~np.isnan(final)).sum()), int((~np.isnan(finals[BASELINE])).sum()), dof
                )
                analysis = UNPAIRED
            key = (algorithm, task, strategy)
            eff = efficiency.loc[key] if key in efficiency.index else None
            truth = gt.get(strategy)
            row = {
                "algorithm": algorithm,
                "task": task,
                "strategy": strategy,
                "metric": metric,
                "n_runs": int((~np.isnan(final)).sum()),
                "budget": float(budget),
                "base": float(np.nanmean(base)) if not np.isnan(base).all() else float("nan"),
                "final": est_final.point,
                "final_low": est_final.low,
                "final_high": est_final.high,
                "gain": est_gain.point,
                "gain_low": est_gain.low,
                "gain_high": est_gain.high,
                "gain_min": float(np.nanmin(gains)) if not np.isnan(gains).all() else float("nan"),
                "seeds_gained": int((gains > 0).sum()),
                "seed_std": float(np.nanstd(final, ddof=1)) if (~np.isnan(final)).sum() > 1 else float("nan"),
                "pooled_std": seed_std,
                "dof": dof,
                "baseline_learned": base_learned,
                "diff": diff.point,
                "diff_low": diff.low,
                "diff_high": diff.high,
                "mde": mde,
                "analysis": analysis,
                "residual_std": resid_std,
                "gt_metric": None if truth is None else truth["metric"],
                "gt_gain": float("nan") if truth is None else truth["gain"],
                "gt_gain_low": float("nan") if truth is None else truth["gain_low"],
                "gt_gain_high": float("nan") if truth is None else truth["gain_high"],
                "queries": float("nan") if eff is None else float(eff["queries"]),
                "queries_low": float("nan") if eff is None else float(eff["ci_low"]),
                "queries_high": float("nan") if eff is None else float(eff["ci_high"]),
            }
            row["verdict"] = sentence(strategy, row, digits)
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def ground_truths(metrics: pd.DataFrame) -> dict[tuple[str, str], dict[str, dict]]:
    """{(algorithm, task): {strategy: the cell's ground-truth outcome row}} at the verdict's budget.
    A cell's ground truth is the metric its reward declares (``register_reward(ground_truth=...)``);
    for a reward that declares none, the only ``eval_gt_*`` metric its runs logged, if just one."""
    from diffexp.rewards import ground_truth_metric

    names = sorted(m for m in set(metrics["metric"]) if m.startswith("eval_gt_"))
    if not names:
        return {}
    wanted: dict[tuple[str, str], str] = {}
    for (algorithm, task, reward), cell in metrics.groupby(["algorithm", "task", "reward"]):
        logged = sorted(m for m in set(cell["metric"]) if m.startswith("eval_gt_"))
        declared = ground_truth_metric(str(reward))
        choice = declared if declared in logged else (logged[0] if declared is None and len(logged) == 1 else None)
        if choice is not None:
            wanted[(algorithm, task)] = choice
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for _, r in outcome_table(metrics, sorted(set(wanted.values()))).iterrows():
        if wanted.get((r["algorithm"], r["task"])) == r["metric"]:
            out.setdefault((r["algorithm"], r["task"]), {})[r["strategy"]] = r.to_dict()
    return out


def cell_sentences(verdict: pd.DataFrame) -> list[str]:
    """One line per cell for the top of the page: did the baseline learn, which arms differ."""
    out = []
    for (algorithm, task), cell in verdict.groupby(["algorithm", "task"], sort=False):
        base = cell[cell["strategy"] == BASELINE]
        head = f"{cell_label(algorithm, task)}: "
        if base.empty:
            out.append(head + "no baseline runs, so no comparison.")
            continue
        b = base.iloc[0]
        arms = cell[cell["strategy"] != BASELINE]
        if not b["baseline_learned"]:
            learners = [r["verdict"] for _, r in arms.iterrows() if learned_arm(r.to_dict())]
            tail = "; ".join(learners) if learners else "no strategy learned either; no comparison is possible"
            out.append(head + b["verdict"] + "; " + tail + ".")
            continue
        detected = [r["verdict"] for _, r in arms.iterrows() if not r["verdict"].startswith("no difference")]
        if detected:
            out.append(head + b["verdict"] + "; " + "; ".join(detected) + ".")
        else:
            mde = arms["mde"].dropna()
            digits = max(2, decimals(list(arms["final"]) + list(mde)))
            how = f"{arms['analysis'].iloc[0]}: " if not arms.empty and arms["analysis"].iloc[0] else ""
            limit = (
                f" ({how}differences of {fmt(mde.max(), digits)} or more would be detected)" if not mde.empty else ""
            )
            out.append(head + b["verdict"] + f"; no strategy differs detectably from it{limit}.")
    return out


def display_table(verdict: pd.DataFrame) -> pd.DataFrame:
    """The verdict as the page and LaTeX show it."""
    rows = []
    for (algorithm, task), cell in verdict.groupby(["algorithm", "task"], sort=False):
        digits = max(2, decimals(list(cell["final"]) + list(cell["seed_std"])))
        for _, r in cell.iterrows():
            rows.append(
                {
                    "Cell": cell_label(algorithm, task),
                    "Strategy": strategy_label(r["strategy"]),
                    "Seeds": str(r["n_runs"]),
                    "Base model": fmt(r["base"], digits),
                    "Final": fmt_ci(r["final"], r["final_low"], r["final_high"], digits),
                    "Gain over base": _signed(fmt_ci(r["gain"], r["gain_low"], r["gain_high"], digits))
                    + ("" if math.isnan(r["gain"]) else f" ({r['seeds_gained']}/{r['n_runs']} seeds > 0)"),
                    "Seed std": fmt(r["seed_std"], digits),
                    "Δ vs baseline": "–"
                    if r["strategy"] == BASELINE
                    else _signed(fmt_ci(r["diff"], r["diff_low"], r["diff_high"], digits)),
                    "Detectable Δ": "–" if r["strategy"] == BASELINE else fmt(r["mde"], digits),
                    "Analysis": "–" if r["strategy"] == BASELINE else r["analysis"],
                    "Queries to baseline's final": fmt_ci(r["queries"], r["queries_low"], r["queries_high"], 0)
                    if r["baseline_learned"]
                    else "–",
                    "Verdict": r["verdict"],
                }
            )
    return pd.DataFrame(rows)


def outcome_metrics(metrics: pd.DataFrame) -> list[str]:
    """Held-out quantities besides the learned reward: ground truths, other rewards, diversity."""
    names = set(metrics["metric"])
    gts = sorted(m for m in names if m.startswith("eval_gt_"))
    scores = sorted(m for m in names if m.startswith("eval_score_"))
    return gts + scores + [m for m in ("eval_vendi", "eval_diversity") if m in names]


def outcome_table(metrics: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
    """Per cell x strategy x quantity: the base model's value, the final value and the gain at the
    cell's final budget (the same budget as the verdict's), t intervals with the pooled seed std. A cell's own
    training reward is left out of the other rewards (``eval_score_<its reward>``)."""
    names = outcome_metrics(metrics) if names is None else names
    rows = []
    budgets = {
        key: min(c.steps.max() for cs in by.values() for c in cs)
        for key, by in panel_curves(metrics, HELDOUT_METRIC).items()
    }
    for metric in names:
        for (algorithm, task), by_strategy in panel_curves(metrics, metric).items():
            own = metrics.loc[(metrics["algorithm"] == algorithm) & (metrics["task"] == task), "reward"].iloc[0]
            if metric == f"eval_score_{own}":
                continue
            budget = budgets.get((algorithm, task), min(c.steps.max() for cs in by_strategy.values() for c in cs))
            values = {strategy: run_values(curves, budget) for strategy, curves in by_strategy.items()}
            sigma, dof = stats.pooled_std(v[0] for v in values.values())
            for strategy, (final, base) in values.items():
                est_final, est_gain = (
                    stats.pooled_t_interval(final, sigma, dof),
                    stats.pooled_t_interval(final - base, sigma, dof),
                )
                rows.append(
                    {
                        "algorithm": algorithm,
                        "task": task,
                        "strategy": strategy,
                        "metric": metric,
                        "budget": budget,
                        "base": float(np.nanmean(base)) if not np.isnan(base).all() else float("nan"),
                        "final": est_final.point,
                        "final_low": est_final.low,
                        "final_high": est_final.high,
                        "gain": est_gain.point,
                        "gain_low": est_gain.low,
                        "gain_high": est_gain.high,
                        "n_runs": len(by_strategy[strategy]),
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "algorithm",
            "task",
            "strategy",
            "metric",
            "budget",
            "base",
            "final",
            "final_low",
            "final_high",
            "gain",
            "gain_low",
            "gain_high",
            "n_runs",
        ],
    )


def outcome_display(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Cell x strategy rows, one column per quantity: 'base -> final (gain [CI])'."""
    from diffexp.reporting.labels import metric_label

    if outcomes.empty:
        return pd.DataFrame()
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for metric, part in outcomes.groupby("metric", sort=False):
        digits = max(2, decimals(part["final"]))
        for _, r in part.iterrows():
            cell = rows.setdefault((r["algorithm"], r["task"], r["strategy"]), {})
            cell[metric_label(metric)] = (
                f"{fmt(r['base'], digits)} → {fmt(r['final'], digits)} "
                f"({_signed(fmt_ci(r['gain'], r['gain_low'], r['gain_high'], digits))})"
            )
    columns = list(dict.fromkeys(metric_label(m) for m in outcomes["metric"]))
    out = []
    for (algorithm, task, strategy), values in rows.items():
        out.append(
            {
                "Cell": cell_label(algorithm, task),
                "Strategy": strategy_label(strategy),
                **{c: values.get(c, "–") for c in columns},
            }
        )
    return pd.DataFrame(out)
