"""Figures: sample-efficiency curves, what the learned reward stands for, diversity, samples.

Every figure is a grid of panels, one per cell (algorithm x task) that the study has, so no panel
is ever empty; a panel draws one line per strategy (fixed colours, :mod:`labels`) with its 95%
t band over seeds, and the legend sits above the panels, off the data. Curves are first
interpolated onto the panel's common query grid (runs of a study usually log at the same steps;
otherwise averaging would mix runs at different x values). Held-out curves start at 0 queries,
the base model. Each saved figure records its panels and how many points their lines have
(``FigureFile.panels``), and the SVG keeps one group per axes, so tests can check both.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffexp.reporting import stats
from diffexp.reporting.labels import (
    algorithm_order,
    cell_label,
    metric_label,
    ordered,
    reward_label,
    strategy_label,
    strategy_order,
    strategy_palette,
)

MAX_GRID = 200  # grid points per panel: bounds the work and the SVG size
CURVE_GID = "curve-"  # the SVG group id of every data line (see svg_panels)
BAND_COLUMNS = ["algorithm", "task", "strategy", "metric", "step", "mean", "low", "high", "n_runs"]
PANEL_W, PANEL_H = 3.7, 2.6  # inches per panel


@dataclass
class PanelInfo:
    """What one panel of a saved figure shows: its title, lines (one per strategy) and the
    fewest points any of its lines has."""

    title: str
    lines: int
    min_points: int


@dataclass
class FigureFile:
    """A saved figure: ``key`` names the files (``<key>.png``, ``<key>.svg``)."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path
    panels: list[PanelInfo] = field(default_factory=list)


def panel_grid(steps) -> np.ndarray:
    """The union of the logged steps, or MAX_GRID evenly spaced points if that is larger."""
    grid = np.unique(np.asarray(steps, dtype=float))
    return np.linspace(grid[0], grid[-1], MAX_GRID) if grid.size > MAX_GRID else grid


def t_band(matrix: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high, n) per column of a (runs x grid) matrix: the t interval over the runs
    that cover each point (NaN elsewhere; the band collapses to the mean with one run)."""
    n = (~np.isnan(matrix)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(matrix, axis=0)
        sd = np.nanstd(matrix, axis=0, ddof=1)
    half = np.where(n > 1, scipy.stats.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, mean - half, mean + half, n


def bands(metrics: pd.DataFrame, metric: str, alpha: float = 0.05) -> pd.DataFrame:
    """Per (algorithm, task, strategy): mean curve over runs on the panel grid with a t band.
    Grid points no run reaches are dropped (no extrapolation)."""
    sub = metrics[metrics["metric"] == metric]
    frames = []
    for (algorithm, task), panel in sub.groupby(["algorithm", "task"], sort=False):
        grid = panel_grid(panel["step"])
        for strategy, runs in panel.groupby("strategy", sort=False):
            curves = [
                (r["step"].to_numpy(float), r["value"].to_numpy(float)) for _, r in runs.groupby("run_id", sort=False)
            ]
            mean, low, high, n = t_band(stats.curves_on_grid(curves, grid), alpha)
            keep = ~np.isnan(mean)
            frames.append(
                pd.DataFrame(
                    {
                        "algorithm": algorithm,
                        "task": task,
                        "strategy": strategy,
                        "metric": metric,
                        "step": grid[keep],
                        "mean": mean[keep],
                        "low": low[keep],
                        "high": high[keep],
                        "n_runs": n[keep],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[BAND_COLUMNS] if frames else pd.DataFrame(columns=BAND_COLUMNS)


def cells(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    """(algorithm, task) pairs present in the study, in display order."""
    out = []
    for algorithm in ordered(metrics["algorithm"].unique(), algorithm_order()):
        out += [(algorithm, t) for t in sorted(metrics.loc[metrics["algorithm"] == algorithm, "task"].unique())]
    return out


@dataclass
class Panel:
    title: str
    ylabel: str
    data: pd.DataFrame  # bands of one (algorithm, task, metric)


def _legend_handles(strategies: list[str], palette: dict[str, str]):
    return [Line2D([0], [0], color=palette[s], linewidth=2.2, label=strategy_label(s)) for s in strategies]


def draw_panels(panels: list[Panel], ncols: int, positions: list[int] | None = None) -> tuple[Figure, list[PanelInfo]]:
    """Panels in rows of ``ncols``, at ``positions`` (1-based places in that grid; default: in
    order), with axes only where a panel is; the legend above them."""
    positions = positions or list(range(1, len(panels) + 1))
    strategies = ordered({s for p in panels for s in p.data["strategy"].unique()}, strategy_order())
    palette = strategy_palette(strategies)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.82)
    nrows = math.ceil(max(positions) / ncols)
    fig = Figure(figsize=(ncols * PANEL_W, nrows * PANEL_H + 0.5))  # no pyplot: headless, no global figure state
    infos = []
    for panel, position in zip(panels, positions):
        ax = fig.add_subplot(nrows, ncols, position)
        points = []
        for strategy in ordered(panel.data["strategy"].unique(), strategy_order()):
            d = panel.data[panel.data["strategy"] == strategy].sort_values("step")
            ax.fill_between(d["step"], d["low"], d["high"], color=palette[strategy], alpha=0.16, linewidth=0)
            ax.plot(
                d["step"],
                d["mean"],
                color=palette[strategy],
                linewidth=1.7,
                marker="o" if len(d) <= 12 else None,
                markersize=3,
                gid=f"{CURVE_GID}{strategy}",
            )
            points.append(len(d))
        ax.set_title(literal(panel.title), fontsize=9.5)
        ax.set_xlabel("reward queries", fontsize=8.5)
        ax.set_ylabel("\n".join(textwrap.wrap(panel.ylabel, 28)), fontsize=8.5)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 5))
        ax.tick_params(labelsize=7.5)
        ax.margins(x=0.02)
        infos.append(PanelInfo(panel.title, len(points), min(points, default=0)))
    fig.legend(
        handles=_legend_handles(strategies, palette),
        loc="upper center",
        ncol=len(strategies),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()), h_pad=1.2, w_pad=1.0)
    return fig, infos


def curve_figure(metrics: pd.DataFrame, metric: str, ncols: int = 2):
    """One panel per cell: ``metric`` against reward queries, strategies overlaid."""
    data = bands(metrics, metric)
    panels = [
        Panel(cell_label(a, t), metric_label(metric), d)
        for (a, t) in cells(data)
        if not (d := data[(data["algorithm"] == a) & (data["task"] == t)]).empty
    ]
    return draw_panels(panels, min(ncols, len(panels))) if panels else None


def quantity_figure(metrics: pd.DataFrame, quantities_of):
    """One row of panels per cell; ``quantities_of(algorithm, task)`` lists that row's metrics
    (a cell lacking one gets no axes in that place)."""
    panels, positions, rows = [], [], []
    for algorithm, task in cells(metrics):
        sub = metrics[(metrics["algorithm"] == algorithm) & (metrics["task"] == task)]
        row = [
            Panel(f"{cell_label(algorithm, task)}\n{metric_label(m)}", metric_label(m), d)
            for m in quantities_of(algorithm, task)
            if not (d := bands(sub, m)).empty
        ]
        if row:
            rows.append(row)
    if not rows:
        return None
    ncols = max(len(r) for r in rows)
    for r, row in enumerate(rows):
        panels += row
        positions += [r * ncols + c + 1 for c in range(len(row))]
    return draw_panels(panels, ncols, positions)


def ground_truth_metrics(metrics: pd.DataFrame, algorithm: str, task: str) -> list[str]:
    """The held-out learned reward, every ground truth the world logged, and the rewards the cell
    was not trained on."""
    sub = metrics[(metrics["algorithm"] == algorithm) & (metrics["task"] == task)]
    names = set(sub["metric"])
    own = str(sub["reward"].iloc[0]) if not sub.empty else ""
    others = sorted(m for m in names if m.startswith("eval_score_") and m != f"eval_score_{own}")
    return [
        m for m in ["eval_reward_mean", *sorted(m for m in names if m.startswith("eval_gt_")), *others] if m in names
    ]


def save_figure(
    fig, out_dir: Path, key: str, title: str, caption: str, panels: list[PanelInfo] | None = None, dpi: int = 100
) -> FigureFile:
    """PNG (for the page) and SVG (for papers) into ``out_dir/figures``; closes the figure."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{key}.png", folder / f"{key}.svg"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    fig.savefig(svg, metadata={"Date": None}, bbox_inches="tight")
    return FigureFile(key, title, caption, png, svg, panels or [])


BAND_NOTE = "Mean over seeds with 95% t bands; x: reward queries (reward-model calls on training samples)."


def make_figures(metrics: pd.DataFrame, out_dir: Path, seed: int = 0) -> list[FigureFile]:
    """Every figure the study's metrics allow, saved; in page order."""
    out = []
    names = set(metrics["metric"])

    def add(made, key, title, caption):
        if made is not None:
            out.append(save_figure(made[0], out_dir, key, title, caption, made[1]))

    if "eval_reward_mean" in names:
        add(
            curve_figure(metrics, "eval_reward_mean"),
            "heldout_reward",
            "Sample efficiency: reward on the evaluation set",
            "The learned reward of the evaluation set (fixed prompts and noise, the same for every run of a cell, "
            "never trained on; no exploration; 0 queries = the "
            "base model) against the reward queries spent on training. " + BAND_NOTE,
        )
    if names & {m for m in names if m.startswith("eval_gt_") or m.startswith("eval_score_")}:
        add(
            quantity_figure(metrics, lambda a, t: ground_truth_metrics(metrics, a, t)),
            "ground_truth",
            "What the learned reward stands for",
            "Evaluation samples scored by the learned reward they were trained on, by the world's ground truths and "
            "by the "
            "reward they were not trained on. A learned reward rising while a ground truth falls is reward hacking. "
            + BAND_NOTE,
        )
    diversity = [m for m in ("eval_diversity", "eval_vendi") if m in names]
    if diversity:
        add(
            quantity_figure(metrics, lambda a, t: diversity),
            "diversity",
            "Diversity of the evaluation samples",
            "Within-prompt diversity of the evaluation samples: RMS pixel distance between samples of a prompt, and "
            "the Vendi "
            "score (effective number of distinct samples) of their embeddings in the world's CLIP. " + BAND_NOTE,
        )
    if "reward_mean" in names:
        add(
            curve_figure(metrics, "reward_mean"),
            "training_reward",
            "Training-batch reward",
            "Mean reward of each epoch's training samples (drawn with the strategy's exploration, scored on the "
            "original "
            "prompts): noisier than the evaluation-set curve, since each epoch draws other prompts and noise. "
            + BAND_NOTE,
        )
    return out


# -- samples ----------------------------------------------------------------------------------
def sample_columns(prompts: list[str], limit: int = 10) -> list[int]:
    """Indices of up to ``limit`` samples covering as many prompts as possible (first sample of
    each prompt, then the second, ...)."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    picked, rank = [], 0
    while len(picked) < min(limit, len(prompts)):
        for indices in by_prompt.values():
            if rank < len(indices) and len(picked) < limit:
                picked.append(indices[rank])
        rank += 1
    return sorted(picked)


def literal(text: str) -> str:
    """``text`` as matplotlib shows it verbatim: an unescaped ``$`` would start mathtext (a prompt
    with ``$\\bogus$`` fails at layout); backslashes and braces are literal outside it."""
    return text.replace("$", r"\$")


def samples_figure(rows: list[tuple[str, list]], prompts: list[str], columns: list[int]):
    """A grid of sample tiles: one row per (label, tiles), one column per chosen sample, prompts on top."""
    sns.set_theme(style="white")
    fig = Figure(figsize=(1.05 * len(columns) + 1.3, 1.05 * len(rows) + 0.75))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, (label, tiles) in enumerate(rows):
        for c, index in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(np.asarray(tiles[index]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(literal("\n".join(textwrap.wrap(prompts[index], 16))), fontsize=6.5)
            if c == 0:
                lines = [w for line in label.split("\n") for w in textwrap.wrap(line, 18)]
                ax.set_ylabel(literal("\n".join(lines)), fontsize=7.5, rotation=0, ha="right", va="center", labelpad=6)
    fig.tight_layout(w_pad=0.2, h_pad=0.3)
    return fig


def svg_panels(svg: Path) -> list[int]:
    """Read back from a saved SVG: for each axes (panel), the fewest points of its data lines
    (0 when it has none, i.e. an empty panel). Parses the file, not this module's bookkeeping."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(svg).getroot()
    out = []
    for axes in root.iter(f"{ns}g"):
        if not (axes.get("id") or "").startswith("axes_"):
            continue
        counts = []
        for group in axes.iter(f"{ns}g"):
            if (group.get("id") or "").startswith(CURVE_GID):
                path = next(group.iter(f"{ns}path"), None)
                d = path.get("d", "") if path is not None else ""
                counts.append(len([c for c in d.replace("\n", " ").split() if c in ("M", "L")]))
        out.append(min(counts) if counts else 0)
    return out


def png_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def thumbnail(path: Path, max_width: int = 400) -> bytes:
    """An image shrunk to ``max_width`` and palette-quantised PNG: keeps the page small."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


__all__ = [
    "FigureFile",
    "PanelInfo",
    "bands",
    "make_figures",
    "reward_label",
    "sample_columns",
    "samples_figure",
    "thumbnail",
]
