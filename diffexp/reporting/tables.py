"""Paper-style tables from the long metric table.

Each table is a long DataFrame of raw numbers (one row per algorithm x task x metric x strategy
[x budget]; written to CSV so nothing is lost to rounding); :mod:`diffexp.reporting.table_display`
formats them (``mean [low, high]`` strings) and :mod:`diffexp.reporting.latex` writes them.

Conventions, per panel (algorithm x task):
* the *common budget* is the smallest last logged step over the panel's runs, so every strategy
  is compared over the same number of reward queries; "final" means "at the common budget";
* default budgets are 25%, 50% and 100% of the common budget;
* the baseline's *final reward* is its seed-averaged curve at the common budget; "queries to
  baseline" is where each strategy's seed-averaged curve first reaches it, and the ratio divides
  that by the baseline's own (< 1: fewer queries than the baseline);
* AUC is the trapezoid area over [first step, common budget] divided by the span (mean reward over
  training);
* IQM / P(improvement) pool a reward's prompt sets as tasks, runs truncated to the smallest count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from diffexp.reporting import stats
from diffexp.reporting.labels import (
    BASELINE,
    algorithm_order,
    ordered,
    strategy_order,
)

DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
#: the held-out reward first (the verdict's metric), then the training-batch reward
TABLE_METRICS = ("eval_reward_mean", "reward_mean")
#: "queries to reach the baseline's final value" only means something for the optimised reward;
#: a ground truth may fall while the reward rises (that is what the ground-truth figure shows)
EFFICIENCY_METRICS = ("reward_mean", "eval_reward_mean")
#: a held-out curve has few points (its evaluations): its budgets are those points
MAX_LOGGED_BUDGETS = 12
#: an area under a curve needs a curve: runs with fewer points get none
AUC_MIN_POINTS = 3
#: short file names of the tables of each metric
METRIC_KEYS = {"eval_reward_mean": "heldout", "reward_mean": "training"}


@dataclass
class Curve:
    run_id: str
    seed: str
    steps: np.ndarray
    values: np.ndarray

    @property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.steps, self.values


@dataclass
class Tables:
    """Raw long tables (CSV) for every metric in ``metrics``; ``primary`` is the metric summarised."""

    budgets: pd.DataFrame
    efficiency: pd.DataFrame
    auc: pd.DataFrame
    robust: pd.DataFrame
    ablation: pd.DataFrame
    primary: str
    metrics: list[str] = field(default_factory=list)
    task_rewards: dict[str, str] = field(default_factory=dict)


# -- grouping ------------------------------------------------------------------------------------
def panel_curves(metrics: pd.DataFrame, metric: str) -> dict[tuple[str, str], dict[str, list[Curve]]]:
    """{(algorithm, task): {strategy: [Curve per run]}} in display order."""
    sub = metrics[metrics["metric"] == metric]
    out: dict[tuple[str, str], dict[str, list[Curve]]] = {}
    for algorithm in ordered(sub["algorithm"].unique(), algorithm_order()):
        for task in sorted(sub.loc[sub["algorithm"] == algorithm, "task"].unique()):
            panel = sub[(sub["algorithm"] == algorithm) & (sub["task"] == task)]
            by_strategy = {}
            for strategy in ordered(panel["strategy"].unique(), strategy_order()):
                runs = panel[panel["strategy"] == strategy].sort_values(["seed", "run_id", "step"])
                by_strategy[strategy] = [
                    Curve(run_id, str(g["seed"].iloc[0]), g["step"].to_numpy(float), g["value"].to_numpy(float))
                    for run_id, g in runs.groupby("run_id", sort=False)
                ]
            out[(algorithm, task)] = by_strategy
    return out


def common_budget(by_strategy: dict[str, list[Curve]]) -> float:
    """The smallest last step over all runs of a panel."""
    lasts = [c.steps.max() for curves in by_strategy.values() for c in curves if c.steps.size]
    return float(min(lasts)) if lasts else float("nan")


def panel_budgets(
    by_strategy: dict[str, list[Curve]],
    budgets: list[float] | None,
    fractions=DEFAULT_FRACTIONS,
    evaluations: bool = False,
) -> list[float]:
    """The given budgets; else, for held-out ``evaluations`` logged at a few steps shared by every
    run, those steps up to the common budget; else 25%, 50% and 100% of the common budget."""
    if budgets:
        return [float(b) for b in budgets]
    common = common_budget(by_strategy)
    if math.isnan(common):
        return []
    logged = sorted({float(x) for curves in by_strategy.values() for c in curves for x in c.steps if x <= common})
    shared = all(set(logged) <= set(c.steps.tolist()) for cs in by_strategy.values() for c in cs)
    if evaluations and shared and len(logged) <= MAX_LOGGED_BUDGETS:
        return logged
    return sorted({float(round(f * common)) for f in fractions})


# -- raw tables ----------------------------------------------------------------------------------
def budget_table(
    metrics: pd.DataFrame,
    metric: str,
    budgets: list[float] | None = None,
    reps: int = stats.DEFAULT_REPS,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean value at each query budget with a bootstrap CI over runs (runs that stopped before a
    budget do not count there)."""
    rows = []
    for (algorithm, task), by_strategy in panel_curves(metrics, metric).items():
        for budget in panel_budgets(by_strategy, budgets, evaluations=metric.startswith("eval_")):
            for strategy, curves in by_strategy.items():
                values = [stats.value_at(*c.xy, budget) for c in curves]
                est = stats.bootstrap_ci(values, reps=reps, seed=seed)
                rows.append(
                    {
                        "algorithm": algorithm,
                        "task": task,
                        "metric": metric,
                        "strategy": strategy,
                        "budget": budget,
                        "mean": est.point,
                        "ci_low": est.low,
                        "ci_high": est.high,
                        "n_runs": int(np.sum(~np.isnan(values))),
                    }
                )
    return pd.DataFrame(
        rows, columns=["algorithm", "task", "metric", "strategy", "budget", "mean", "ci_low", "ci_high", "n_runs"]
    )


def efficiency_table(metrics: pd.DataFrame, metric: str, reps: int = stats.DEFAULT_REPS, seed: int = 0) -> pd.DataFrame:
    """Queries each strategy needs to reach the baseline's final value, and the ratio to the
    baseline's own. CIs resample the strategy's and the baseline's runs independently; the target
    stays fixed. Panels without a baseline are skipped."""
    rows = []
    for (algorithm, task), by_strategy in panel_curves(metrics, metric).items():
        base = [c.xy for c in by_strategy.get(BASELINE, [])]
        if not base:
            continue
        budget = common_budget(by_strategy)
        grid = np.unique(np.concatenate([c.steps for curves in by_strategy.values() for c in curves]))
        base_matrix = stats.curves_on_grid(base, grid)
        base_mean = stats.nanmean_rows(base_matrix)
        target = float(stats.value_at(grid, base_mean, budget))
        base_q = stats.queries_to_reach(grid, base_mean, target)
        rng = np.random.default_rng(seed)
        for strategy, curves in by_strategy.items():
            matrix = stats.curves_on_grid([c.xy for c in curves], grid)
            q = stats.queries_to_reach(grid, stats.nanmean_rows(matrix), target)
            q_boot = stats.queries_to_reach_batch(grid, stats.bootstrap_mean_rows(matrix, reps, rng), target)
            # the ratio's interval resamples the baseline too, with its (resampled) final value as target
            b_means = stats.bootstrap_mean_rows(base_matrix, reps, rng)
            b_targets = np.array([stats.value_at(grid, m, budget) for m in b_means])
            b_boot = stats.queries_to_reach_batch(grid, b_means, b_targets)
            s_boot = stats.queries_to_reach_batch(grid, stats.bootstrap_mean_rows(matrix, reps, rng), b_targets)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = s_boot / b_boot
            rows.append(
                {
                    "algorithm": algorithm,
                    "task": task,
                    "metric": metric,
                    "strategy": strategy,
                    "target": target,
                    "budget": budget,
                    "queries": q,
                    **dict(zip(("ci_low", "ci_high"), stats.percentile_interval(q_boot))),
                    "baseline_queries": base_q,
                    "ratio": q / base_q if base_q > 0 else float("nan"),
                    **dict(zip(("ratio_low", "ratio_high"), stats.percentile_interval(ratios))),
                    "n_runs": len(curves),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "algorithm",
            "task",
            "metric",
            "strategy",
            "target",
            "budget",
            "queries",
            "ci_low",
            "ci_high",
            "baseline_queries",
            "ratio",
            "ratio_low",
            "ratio_high",
            "n_runs",
        ],
    )


def auc_table(metrics: pd.DataFrame, metric: str, reps: int = stats.DEFAULT_REPS, seed: int = 0) -> pd.DataFrame:
    """Normalised area under each run's curve up to the common budget; mean and CI over runs."""
    rows = []
    for (algorithm, task), by_strategy in panel_curves(metrics, metric).items():
        budget = common_budget(by_strategy)
        for strategy, curves in by_strategy.items():
            curves = [c for c in curves if np.sum(c.steps <= budget) >= AUC_MIN_POINTS]
            if not curves:
                continue
            est = stats.bootstrap_ci([stats.auc(*c.xy, budget=budget) for c in curves], reps=reps, seed=seed)
            rows.append(
                {
                    "algorithm": algorithm,
                    "task": task,
                    "metric": metric,
                    "strategy": strategy,
                    "budget": budget,
                    "auc": est.point,
                    "ci_low": est.low,
                    "ci_high": est.high,
                    "n_runs": len(curves),
                }
            )
    return pd.DataFrame(
        rows, columns=["algorithm", "task", "metric", "strategy", "budget", "auc", "ci_low", "ci_high", "n_runs"]
    )


def score_matrices(metrics: pd.DataFrame, metric: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """{(algorithm, reward): {strategy: (runs x prompt sets) final values}} for the robust statistics."""
    panels = panel_curves(metrics, metric)
    rewards = metrics.drop_duplicates("task").set_index("task")["reward"].to_dict()
    grouped: dict[tuple[str, str], dict[str, list[list[float]]]] = {}
    for (algorithm, task), by_strategy in panels.items():
        budget = common_budget(by_strategy)
        for strategy, curves in by_strategy.items():
            column = [float(stats.value_at(*c.xy, budget)) for c in curves]
            grouped.setdefault((algorithm, rewards[task]), {}).setdefault(strategy, []).append(column)
    out = {}
    for key, by_strategy in grouped.items():
        out[key] = {}
        for strategy, columns in by_strategy.items():
            n = min(len(c) for c in columns)
            out[key][strategy] = np.array([c[:n] for c in columns], dtype=float).T
    return out


def robust_table(metrics: pd.DataFrame, metric: str, reps: int = stats.DEFAULT_REPS, seed: int = 0) -> pd.DataFrame:
    """IQM of final values (stratified bootstrap CI) and P(strategy > baseline) per algorithm x reward."""
    rows = []
    for (algorithm, reward), by_strategy in score_matrices(metrics, metric).items():
        base = by_strategy.get(BASELINE)
        for strategy, scores in by_strategy.items():
            est = stats.iqm_ci(scores, reps=reps, seed=seed)
            if base is not None and base.shape[1] == scores.shape[1]:
                poi = stats.probability_of_improvement_ci(scores, base, reps=reps, seed=seed)
            else:
                poi = stats.Estimate(float("nan"), float("nan"), float("nan"))
            rows.append(
                {
                    "algorithm": algorithm,
                    "reward": reward,
                    "metric": metric,
                    "strategy": strategy,
                    "iqm": est.point,
                    "iqm_low": est.low,
                    "iqm_high": est.high,
                    "poi": poi.point,
                    "poi_low": poi.low,
                    "poi_high": poi.high,
                    "n_runs": scores.shape[0],
                    "n_tasks": scores.shape[1],
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "algorithm",
            "reward",
            "metric",
            "strategy",
            "iqm",
            "iqm_low",
            "iqm_high",
            "poi",
            "poi_low",
            "poi_high",
            "n_runs",
            "n_tasks",
        ],
    )


def ablation_table(budgets: pd.DataFrame) -> pd.DataFrame:
    """Final value (largest budget of each panel) per strategy x algorithm: the ablation table."""
    if budgets.empty:
        return budgets.assign(budget=[])
    final = budgets[budgets["budget"] == budgets.groupby(["algorithm", "task", "metric"])["budget"].transform("max")]
    return final.reset_index(drop=True)


def build_tables(
    metrics: pd.DataFrame,
    budgets: list[float] | None = None,
    reps: int = stats.DEFAULT_REPS,
    seed: int = 0,
    table_metrics=TABLE_METRICS,
) -> Tables:
    """Every table for every available metric of ``table_metrics``; the first available is primary."""
    present = [m for m in table_metrics if m in set(metrics["metric"])]
    parts = {name: [] for name in ("budgets", "efficiency", "auc", "robust")}
    for metric in present:
        parts["budgets"].append(budget_table(metrics, metric, budgets, reps, seed))
        if metric in EFFICIENCY_METRICS:
            parts["efficiency"].append(efficiency_table(metrics, metric, reps, seed))
        parts["auc"].append(auc_table(metrics, metric, reps, seed))
        parts["robust"].append(robust_table(metrics, metric, reps, seed))
    empty = {"budgets": budget_table, "efficiency": efficiency_table, "auc": auc_table, "robust": robust_table}
    frames = {k: pd.concat(v, ignore_index=True) if v else empty[k](metrics.iloc[:0], "none") for k, v in parts.items()}
    task_rewards = metrics.drop_duplicates("task").set_index("task")["reward"].to_dict()
    return Tables(
        **frames,
        ablation=ablation_table(frames["budgets"]),
        primary=present[0] if present else "",
        metrics=present,
        task_rewards=task_rewards,
    )


# -- formatting ----------------------------------------------------------------------------------
