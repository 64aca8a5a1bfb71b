"""Build a report folder from a study: ``index.html``, ``figures/*.png|svg``, ``tables/*.csv|tex``.

Kept separate from the CLI so notebooks and the sweep harness can call :func:`build_report`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.reporting import figures as figs
from benchmark.reporting import html as page_html
from benchmark.reporting import provenance, stats, tables
from benchmark.reporting.labels import ALGORITHM_ORDER, STRATEGY_ORDER, algorithm_label, metric_label, ordered, strategy_label
from benchmark.reporting.load import Study, load_study

CURVE_METRICS = ("reward_mean", "eval_reward_mean")
IMAGE_POINTS = 3  # eval grids shown per strategy: first, middle and last logged


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    summary: pd.DataFrame
    summary_title: str
    figures: list[figs.FigureFile]
    table_files: list[Path]
    study: Study


def _pick(steps: list[int], n: int) -> list[int]:
    """n roughly evenly spaced items including the first and last."""
    if len(steps) <= n:
        return steps
    return [steps[round(i * (len(steps) - 1) / (n - 1))] for i in range(n)]


def image_sections(study: Study, max_width: int = 400) -> list[page_html.ImageSection]:
    """Per algorithm x task: one row per strategy with the lowest-seed run's eval grids at the
    start, middle and end of training (the grids come captioned with their prompts)."""
    images = study.images
    sections = []
    if images.empty:
        return sections
    for algorithm in ordered(images["algorithm"].unique(), ALGORITHM_ORDER):
        for task in sorted(images.loc[images["algorithm"] == algorithm, "task"].unique()):
            sub = images[(images["algorithm"] == algorithm) & (images["task"] == task)]
            rows = []
            for strategy in ordered(sub["strategy"].unique(), STRATEGY_ORDER):
                s = sub[sub["strategy"] == strategy]
                first_run = s.assign(_seed=pd.to_numeric(s["seed"], errors="coerce")).sort_values(["_seed", "seed", "run_id"]).iloc[0]
                run = s[s["run_id"] == first_run["run_id"]].sort_values("step")
                picked = run[run["step"].isin(_pick(run["step"].tolist(), IMAGE_POINTS))]
                cells = [page_html.ImageCell(f"seed {r.seed} · {r.step:,} queries", figs.thumbnail(Path(r.path), max_width))
                         for r in picked.itertuples()]
                rows.append(page_html.ImageRow(strategy_label(strategy), cells))
            sections.append(page_html.ImageSection(f"{algorithm_label(algorithm)} · {task}", rows))
    return sections


def runs_table(study: Study) -> pd.DataFrame:
    r = study.runs
    return pd.DataFrame({
        "Run": r["run_name"], "Experiment": r["experiment"], "Algorithm": r["algorithm"].map(algorithm_label),
        "Strategy": r["strategy"].map(strategy_label), "Seed": r["seed"], "Reward": r["reward"], "Prompt set": r["prompt_set"],
        "Status": r["status"], "Points": r["n_points"], "Last step": r["last_step"].map(lambda x: "–" if pd.isna(x) else f"{x:,.0f}"),
        "Commit": r["git_commit"].map(lambda c: c[:10] if isinstance(c, str) else "–"),
    })


def run_configs(study: Study) -> list[tuple[str, str]]:
    """(label, text) per run: its config.yaml, or its logged params when it has none."""
    out = []
    for r in study.runs.itertuples():
        text = study.configs.get(r.run_id)
        if text is None and r.params:
            text = "\n".join(f"{k}: {v}" for k, v in sorted(r.params.items()))
        tags = ", ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
        if text or tags:
            out.append((f"{r.run_name} ({r.algorithm}, {r.strategy}, seed {r.seed})", (f"# tags: {tags}\n" if tags else "") + (text or "")))
    return out


def study_provenance(study: Study, command: list[str] | None) -> dict:
    prov = provenance.collect(command)
    commits = sorted({c for c in study.runs["git_commit"] if isinstance(c, str)})
    prov = {"study": study.name, "tracking_uri": study.tracking_uri, "experiments": ", ".join(sorted(study.runs["experiment"].unique())),
            "runs": str(len(study.runs)), "run_git_commits": ", ".join(commits) or "not recorded", **prov}
    prov["report_git_commit"] = prov.pop("git_commit")
    return prov


def build_report(
    path: Path | str | None,
    out: Path | str | None = None,
    tracking_uri: str | None = None,
    experiments: list[str] | None = None,
    budgets: list[float] | None = None,
    reps: int = stats.DEFAULT_REPS,
    seed: int = 0,
    command: list[str] | None = None,
) -> ReportResult:
    """Load the study, compute the tables, draw the figures and write the report folder."""
    out_dir = Path(out) if out else Path("reports") / (Path(path).resolve().name if path else "study")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diffexp-report-") as cache:  # downloaded artifacts, dropped afterwards
        return _build(path, out_dir, tracking_uri, experiments, budgets, reps, seed, command, Path(cache))


def _build(path, out_dir: Path, tracking_uri, experiments, budgets, reps, seed, command, cache: Path) -> ReportResult:
    study = load_study(path, tracking_uri, experiments, cache_dir=cache)
    built = tables.build_tables(study.metrics, budgets=budgets, reps=reps, seed=seed)
    table_files = tables.write_tables(built, out_dir)
    curve_metrics = [m for m in CURVE_METRICS if m in set(study.metrics["metric"])]
    figure_files = figs.make_figures(study.metrics, out_dir, curve_metrics, seed=seed)
    summary = tables.summary_table(built)
    summary_title = (f"Headline numbers for {metric_label(built.primary)} ({built.primary}); final = at the common query budget; "
                     "[95% bootstrap CI over seeds]; ratio = queries to reach the baseline's final value / the baseline's own.")
    n_runs = len(study.runs)
    strategies = ", ".join(strategy_label(s) for s in ordered(study.runs["strategy"].unique(), STRATEGY_ORDER)) if n_runs else "none"
    page = page_html.Page(
        title=f"diffexp report: {study.name}",
        subtitle=f"{n_runs} runs · strategies: {strategies} · store: {study.tracking_uri}",
        summary=summary, summary_title=summary_title,
        figures=[page_html.Figure(f.title, f.caption, figs.png_bytes(f.png)) for f in figure_files],
        tables=tables.display_blocks(built),
        image_sections=image_sections(study),
        runs=runs_table(study), provenance=study_provenance(study, command), configs=run_configs(study), notes=study.notes,
    )
    html_path = page_html.write(page, out_dir / "index.html")
    return ReportResult(out_dir, html_path, summary, summary_title, figure_files, table_files, study)
