"""The tables as a reader sees them: ``mean [low, high]`` strings in blocks of one cell each, for
the HTML page and LaTeX (the raw numbers stay in :mod:`diffexp.reporting.tables`)."""

from __future__ import annotations

import pandas as pd

from diffexp.reporting.formatting import decimals, fmt, fmt_ci, slug
from diffexp.reporting.labels import (
    BASELINE,
    algorithm_label,
    cell_label,
    metric_label,
    ordered,
    reward_label,
    strategy_label,
    strategy_order,
)
from diffexp.reporting.tables import METRIC_KEYS, Tables


def _row_label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["Algorithm"] = df["algorithm"].map(algorithm_label)
    df["Strategy"] = df["strategy"].map(strategy_label)
    return df


def _key(metric: str) -> str:
    return METRIC_KEYS.get(metric, slug(metric))


def display_blocks(tables: Tables) -> list[tuple[str, str, pd.DataFrame]]:
    """(key, title, formatted table) blocks for the page and LaTeX, primary metric first."""
    blocks = []
    for metric in sorted(tables.metrics, key=lambda m: m != tables.primary):
        label, key = metric_label(metric), _key(metric)
        b = tables.budgets[tables.budgets["metric"] == metric]
        if not b.empty:
            d = decimals(b["mean"])
            b = _row_label(b).assign(
                cell=[fmt_ci(m, lo, hi, d) for m, lo, hi in zip(b["mean"], b["ci_low"], b["ci_high"])]
            )
            b["Cell"] = [cell_label(a, t) for a, t in zip(b["algorithm"], b["task"])]
            b["Budget"] = b["budget"].map(lambda x: f"{x:,.0f}")
            for cell_name, part in b.groupby("Cell", sort=False):
                wide = part.pivot_table(index="Strategy", columns="Budget", values="cell", aggfunc="first", sort=False)
                order = [f"{x:,.0f}" for x in sorted(part["budget"].unique())]
                wide = wide.reindex(columns=[c for c in order if c in wide.columns]).reset_index()
                blocks.append(
                    (
                        f"{key}_budgets",
                        f"{cell_name}: {label} at each budget (reward queries) [95% bootstrap CI over seeds]",
                        wide,
                    )
                )
        e = tables.efficiency[tables.efficiency["metric"] == metric]
        if not e.empty:
            e = _row_label(e)
            out = pd.DataFrame(
                {
                    "Cell": [cell_label(a, t) for a, t in zip(e["algorithm"], e["task"])],
                    "Strategy": e["Strategy"],
                    "Baseline final": [fmt(v, decimals(e["target"])) for v in e["target"]],
                    "Queries to reach it": [
                        fmt_ci(q, lo, hi, 0) for q, lo, hi in zip(e["queries"], e["ci_low"], e["ci_high"])
                    ],
                    "Ratio to baseline": [
                        fmt_ci(q, lo, hi, 2, "∞") for q, lo, hi in zip(e["ratio"], e["ratio_low"], e["ratio_high"])
                    ],
                }
            )
            blocks.append(
                (
                    f"{key}_efficiency",
                    f"{label}: reward queries to reach the baseline's final value (ratio < 1: fewer)",
                    out,
                )
            )
        a = tables.auc[tables.auc["metric"] == metric]
        if not a.empty:
            d = decimals(a["auc"])
            a = _row_label(a)
            out = pd.DataFrame(
                {
                    "Cell": [cell_label(x, t) for x, t in zip(a["algorithm"], a["task"])],
                    "Strategy": a["Strategy"],
                    "Queries": [f"{x:,.0f}" for x in a["budget"]],
                    "Mean over training (AUC / span)": [
                        fmt_ci(m, lo, hi, d) for m, lo, hi in zip(a["auc"], a["ci_low"], a["ci_high"])
                    ],
                }
            )
            blocks.append((f"{key}_auc", f"{label}: area under the curve divided by the query span [95% CI]", out))
        r = tables.robust[tables.robust["metric"] == metric]
        if not r.empty:
            d = decimals(r["iqm"])
            r = _row_label(r)
            out = pd.DataFrame(
                {
                    "Algorithm": r["Algorithm"],
                    "Reward": r["reward"].map(reward_label),
                    "Strategy": r["Strategy"],
                    "Runs x tasks": [f"{n} x {t}" for n, t in zip(r["n_runs"], r["n_tasks"])],
                    "IQM final": [fmt_ci(m, lo, hi, d) for m, lo, hi in zip(r["iqm"], r["iqm_low"], r["iqm_high"])],
                    "P(> baseline)": [
                        ("–" if s == BASELINE else fmt_ci(m, lo, hi, 2))
                        for s, m, lo, hi in zip(r["strategy"], r["poi"], r["poi_low"], r["poi_high"])
                    ],
                }
            )
            blocks.append(
                (
                    f"{key}_robust",
                    f"{label}: interquartile mean of final values (stratified bootstrap CI) and probability of "
                    "improvement",
                    out,
                )
            )
    blocks += ablation_blocks(tables, tables.primary)
    return blocks


def ablation_blocks(tables: Tables, metric: str) -> list[tuple[str, str, pd.DataFrame]]:
    """Strategy rows x cell columns at each cell's common budget: the paper's ablation table."""
    ab = tables.ablation[tables.ablation["metric"] == metric]
    if ab.empty:
        return []
    cells, cols = {}, []
    for (algorithm, task), part in ab.groupby(["algorithm", "task"], sort=False):
        d = decimals(part["mean"])
        col = f"{cell_label(algorithm, task)} ({part['budget'].iloc[0]:,.0f} q.)"
        cols.append(col)
        for _, r in part.iterrows():
            cells.setdefault(strategy_label(r["strategy"]), {})[col] = fmt_ci(r["mean"], r["ci_low"], r["ci_high"], d)
    strategies = [strategy_label(s) for s in ordered(ab["strategy"].unique(), strategy_order())]
    wide = pd.DataFrame([{"Strategy": s, **{c: cells.get(s, {}).get(c, "–") for c in cols}} for s in strategies])
    return [
        (
            "ablation",
            f"Ablation: {metric_label(metric)} at each cell's final budget (q. = reward queries) [95% bootstrap CI]",
            wide,
        )
    ]
