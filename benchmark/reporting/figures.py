"""Seaborn figures: sample-efficiency curves, diversity, learned reward vs ground truth.

Curves are first interpolated onto a common query grid per panel (runs of one study usually log
at the same steps already; if not, averaging would otherwise mix different runs at different
x values). Each line is the mean over runs with a 95% percentile-bootstrap band over runs at every
grid point, computed here with the same vectorised bootstrap as the tables (seaborn's own
per-point bootstrap is ~20x slower) and drawn on a seaborn FacetGrid.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark.reporting import stats  # noqa: E402
from benchmark.reporting.labels import (  # noqa: E402
    ALGORITHM_ORDER, STRATEGY_ORDER, algorithm_label, metric_label, ordered, strategy_label, strategy_palette,
)

MAX_GRID = 200  # grid points per panel: bounds the bootstrap work and the SVG size
N_BOOT = 1000
BAND_COLUMNS = ["algorithm", "task", "strategy", "metric", "step", "mean", "low", "high", "n_runs"]


@dataclass
class FigureFile:
    """A saved figure: ``key`` names the files (``<key>.png``, ``<key>.svg``)."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path


def panel_grid(steps) -> np.ndarray:
    """The union of the logged steps, or MAX_GRID evenly spaced points if that is larger."""
    grid = np.unique(np.asarray(steps, dtype=float))
    return np.linspace(grid[0], grid[-1], MAX_GRID) if grid.size > MAX_GRID else grid


def bands(metrics: pd.DataFrame, metric: str, n_boot: int = N_BOOT, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per (algorithm, task, strategy): mean curve over runs on the panel grid with a percentile
    bootstrap band (runs resampled). Grid points no run reaches are dropped (no extrapolation)."""
    sub = metrics[metrics["metric"] == metric]
    frames = []
    rng = np.random.default_rng(seed)
    for (algorithm, task), panel in sub.groupby(["algorithm", "task"], sort=False):
        grid = panel_grid(panel["step"])
        for strategy, runs in panel.groupby("strategy", sort=False):
            curves = [(r["step"].to_numpy(float), r["value"].to_numpy(float)) for _, r in runs.groupby("run_id", sort=False)]
            matrix = stats.curves_on_grid(curves, grid)
            mean = stats.nanmean_rows(matrix)
            boots = stats.bootstrap_mean_rows(matrix, n_boot, rng)
            with warnings.catch_warnings():  # grid points no run covers stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanpercentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
            keep = ~np.isnan(mean)
            frames.append(pd.DataFrame({"algorithm": algorithm, "task": task, "strategy": strategy, "metric": metric,
                                        "step": grid[keep], "mean": mean[keep], "low": low[keep], "high": high[keep],
                                        "n_runs": (~np.isnan(matrix)).sum(axis=0)[keep]}))
    return pd.concat(frames, ignore_index=True)[BAND_COLUMNS] if frames else pd.DataFrame(columns=BAND_COLUMNS)


def _draw(data: pd.DataFrame, color=None, label=None, **_):
    ax = plt.gca()
    data = data.sort_values("step")
    ax.fill_between(data["step"], data["low"], data["high"], color=color, alpha=0.18, linewidth=0)
    ax.plot(data["step"], data["mean"], color=color, label=label, linewidth=1.8)


def _facet(data: pd.DataFrame, row: str, col: str, ylabel: str):
    """Line panels (row x col), one line and band per strategy, fixed colours per strategy."""
    data = data.assign(Strategy=data["strategy"].map(strategy_label))
    palette = {strategy_label(s): c for s, c in strategy_palette(data["strategy"].unique()).items()}
    hue_order = [strategy_label(s) for s in ordered(data["strategy"].unique(), STRATEGY_ORDER)]
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    grid = sns.FacetGrid(data, row=row, col=col, hue="Strategy", hue_order=hue_order, palette=palette,
                         row_order=data[row].unique().tolist(), col_order=data[col].unique().tolist(),
                         height=3.0, aspect=1.45, sharex=False, sharey=False, despine=True)
    grid.map_dataframe(_draw)
    grid.add_legend(title="Strategy")
    grid.set_axis_labels("reward queries", ylabel)
    grid.set_titles("{col_name} · {row_name}")
    for ax in grid.axes.flat:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    grid.tight_layout()  # keeps axis labels inside the saved image (and leaves room for the legend)
    return grid.figure


def _ordered_frame(data: pd.DataFrame) -> pd.DataFrame:
    """Algorithms in the usual order, labelled."""
    order = {a: i for i, a in enumerate(ordered(data["algorithm"].unique(), ALGORITHM_ORDER))}
    data = data.sort_values(["algorithm", "task"], key=lambda s: s.map(order) if s.name == "algorithm" else s, kind="stable")
    return data.assign(Algorithm=data["algorithm"].map(algorithm_label))


def sample_efficiency_figure(metrics: pd.DataFrame, metric: str, seed: int = 0):
    """Reward vs reward queries: one panel per algorithm x task, strategies overlaid."""
    data = _ordered_frame(bands(metrics, metric, seed=seed))
    if data.empty:
        return None
    return _facet(data, row="task", col="Algorithm", ylabel=metric_label(metric))


def diversity_figure(metrics: pd.DataFrame, seed: int = 0):
    """Within-prompt diversity over training (training and held-out samples when both exist)."""
    present = [m for m in ("diversity", "eval_diversity") if m in set(metrics["metric"])]
    if not present:
        return None
    data = _ordered_frame(pd.concat([bands(metrics, m, seed=seed) for m in present], ignore_index=True))
    several = data["task"].nunique() > 1
    data["quantity"] = data["metric"].map(metric_label) + (" · " + data["task"] if several else "")
    return _facet(data, row="quantity", col="Algorithm", ylabel="diversity")


def reward_hacking_figure(metrics: pd.DataFrame, seed: int = 0):
    """Learned reward next to ground-truth accuracy of held-out samples (embedded world): reward
    hacking shows as the learned reward rising while the ground truth stalls or falls."""
    names = set(metrics["metric"])
    if "eval_gt_accuracy" not in names:
        return None
    learned = "eval_reward_mean" if "eval_reward_mean" in names else "reward_mean"
    data = _ordered_frame(pd.concat([bands(metrics, learned, seed=seed), bands(metrics, "eval_gt_accuracy", seed=seed)], ignore_index=True))
    several = data["task"].nunique() > 1
    data["panel"] = data["Algorithm"] + (" · " + data["task"] if several else "")
    data["quantity"] = data["metric"].map({learned: "learned reward", "eval_gt_accuracy": "ground-truth accuracy"})
    return _facet(data, row="panel", col="quantity", ylabel="held-out value")


def save_figure(fig, out_dir: Path, key: str, title: str, caption: str, dpi: int = 100) -> FigureFile:
    """PNG (for the page) and SVG (for papers) into ``out_dir/figures``; closes the figure."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{key}.png", folder / f"{key}.svg"
    fig.savefig(png, dpi=dpi)
    fig.savefig(svg, metadata={"Date": None})
    plt.close(fig)
    return FigureFile(key, title, caption, png, svg)


def make_figures(metrics: pd.DataFrame, out_dir: Path, curve_metrics: list[str], seed: int = 0) -> list[FigureFile]:
    """Every figure the study's metrics allow, saved; in page order."""
    out = []
    for metric in curve_metrics:
        fig = sample_efficiency_figure(metrics, metric, seed)
        if fig is not None:
            out.append(save_figure(fig, out_dir, f"curves_{metric}", f"Sample efficiency: {metric_label(metric)}",
                                   "Mean over seeds with 95% bootstrap confidence bands; x: reward queries (reward-model calls on training samples)."))
    fig = diversity_figure(metrics, seed)
    if fig is not None:
        out.append(save_figure(fig, out_dir, "diversity", "Diversity over training",
                               "Within-prompt pixel diversity; exploration should keep it higher for longer. Mean with 95% bootstrap bands."))
    fig = reward_hacking_figure(metrics, seed)
    if fig is not None:
        out.append(save_figure(fig, out_dir, "reward_vs_ground_truth", "Learned reward vs ground truth",
                               "Held-out samples scored by the learned reward (left) and by the world's ground truth (right); "
                               "diverging curves mean reward hacking."))
    return out


def png_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def thumbnail(path: Path, max_width: int = 400) -> bytes:
    """An eval image grid shrunk to ``max_width`` and palette-quantised PNG: keeps the page small
    while the burned-in captions stay readable."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()
