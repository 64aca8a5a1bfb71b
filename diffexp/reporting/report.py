"""Build a report folder from a study: ``index.html``, ``figures/*.png|svg``, ``tables/*.csv|tex``.

The page opens with the verdict (does a strategy beat the baseline on the held-out set, by how
much, and could this many seeds have told?), then the figures, the samples of the base model next
to each strategy's last ones, the tables, the runs and their provenance. Kept separate from the
CLI so notebooks and the sweep harness can call :func:`build_report`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from diffexp.reporting import figures as figs
from diffexp.reporting import html as page_html
from diffexp.reporting import provenance, stats, tables, verdict
from diffexp.reporting.formatting import slug
from diffexp.reporting.labels import (
    algorithm_label,
    cell_label,
    ordered,
    reward_label,
    strategy_label,
    strategy_order,
)
from diffexp.reporting.latex import write_tables
from diffexp.reporting.load import StudyResults, load_results
from diffexp.reporting.table_display import display_blocks

SAMPLE_COLUMNS = 10  # held-out samples shown per cell


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    verdict: pd.DataFrame
    sentences: list[str]
    figures: list[figs.FigureFile]
    table_files: list[Path]
    study: StudyResults


# -- no machine paths on the page ----------------------------------------------------------------
class PathScrubber:
    """Replaces the study directory, the working directory and the home directory in any text
    with ``<study>``, ``.`` and ``~``: a committed report must not name folders of the machine
    that made it."""

    def __init__(self, study_dir: Path | None):
        roots = []
        if study_dir is not None:
            roots.append((str(Path(study_dir).resolve()), "<study>"))
        roots += [(str(Path.cwd().resolve()), "."), (str(Path.home().resolve()), "~")]
        # longest first, so a study inside the working directory becomes <study>, not ./runs/...
        self.roots = sorted({r for r in roots if len(r[0]) > 1}, key=lambda r: -len(r[0]))

    def __call__(self, text):
        if not isinstance(text, str):
            return text
        for root, name in self.roots:
            text = text.replace(root, name)
        return text

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.apply(lambda col: col.map(self)) if not df.empty else df


def store_label(uri: str, study_dir: Path | None) -> str:
    """The tracking store as a reader may see it: relative to the study directory when inside it,
    credentials redacted otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri.split("sqlite:///", 1)[-1])
        if study_dir is not None:
            try:
                return f"sqlite:///<study>/{path.resolve().relative_to(Path(study_dir).resolve())}"
            except ValueError:
                pass
        return f"sqlite:///…/{path.name}"
    if parsed.scheme in ("", "file"):
        return f"…/{Path(parsed.path).name}"
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


# -- samples ----------------------------------------------------------------------------------------
def _strip_tiles(path: str, count: int):
    from PIL import Image

    from diffexp.visualize import split_strip

    with Image.open(path) as image:
        return split_strip(image.convert("RGB"), count)


def sample_figures(study: StudyResults, out_dir: Path) -> list[tuple[str, str, Path]]:
    """Per cell: the held-out samples of the base model (0 queries) and, below, the same prompts
    and noise at the end of training under each strategy (lowest seed). (title, caption, png)."""
    images = study.images[study.images["kind"] == "samples"] if "kind" in study.images else study.images.iloc[:0]
    out = []
    if images.empty:
        return out
    images = images.assign(_seed=pd.to_numeric(images["seed"], errors="coerce"))
    used: set[str] = set()
    for algorithm, task in figs.cells(images):
        cell = images[(images["algorithm"] == algorithm) & (images["task"] == task)]
        rows, prompts = [], None
        for strategy in ordered(cell["strategy"].unique(), strategy_order()):
            s = cell[cell["strategy"] == strategy].sort_values(["_seed", "seed", "run_id"])
            run_id = s.iloc[0]["run_id"]
            run = s[s["run_id"] == run_id].sort_values("step")
            run_prompts = study.eval_prompts.get(run_id)
            if run_prompts is None:
                continue
            if prompts is None:
                prompts = run_prompts
                start = run[run["step"] == 0]
                if not start.empty:
                    rows.append(("base model\n0 queries", _strip_tiles(start.iloc[0]["path"], len(prompts))))
            if run_prompts != prompts or run["step"].max() == 0:
                continue
            last = run.iloc[-1]
            rows.append(
                (
                    f"{strategy_label(strategy)}\nseed {last['seed']}, {last['step']:,} queries",
                    _strip_tiles(last["path"], len(prompts)),
                )
            )
        if prompts is None or len(rows) < 2:
            continue
        fig = figs.samples_figure(rows, prompts, figs.sample_columns(prompts, SAMPLE_COLUMNS))
        reward, _, prompt_set = task.partition(" · ")
        key = f"samples_{algorithm}_{slug(reward_label(reward))}"
        if key in used:  # the same algorithm and reward on another prompt set
            key += f"_{slug(prompt_set)}"
        used.add(key)
        saved = figs.save_figure(fig, out_dir, key, "", "")
        out.append(
            (
                f"Samples: {cell_label(algorithm, task)}",
                "The same evaluation prompts and noise: the base model (top) and each strategy at the end of training "
                "(its lowest seed); no exploration at evaluation.",
                saved.png,
            )
        )
    return out


def evaluation_sets(study: StudyResults) -> list[str]:
    """One line per cell: what its evaluation set is (prompts, samples per prompt, the prompt set's
    evaluation options), read from the runs' logged evaluation prompts and params."""
    lines = []
    runs = study.runs
    for algorithm, task in figs.cells(runs) if not runs.empty else []:
        cell = runs[(runs["algorithm"] == algorithm) & (runs["task"] == task)]
        prompts = next((study.eval_prompts[r] for r in cell["run_id"] if r in study.eval_prompts), None)
        params = cell.iloc[0]["params"] or {}
        options = {
            k.removeprefix("prompts.eval_options."): v
            for k, v in params.items()
            if k.startswith("prompts.eval_options.")
        }
        where = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
        size = (
            f"{len(set(prompts))} prompts x {len(prompts) // max(1, len(set(prompts)))} samples"
            if prompts
            else "prompts not logged"
        )
        lines.append(f"{cell_label(algorithm, task)}: {size}" + (f" ({where})" if where else ""))
    return lines


# -- the rest of the page ------------------------------------------------------------------------
def runs_table(study: StudyResults) -> pd.DataFrame:
    r = study.runs
    return pd.DataFrame(
        {
            "Run": r["run_name"],
            "Experiment": r["experiment"],
            "Algorithm": r["algorithm"].map(algorithm_label),
            "Strategy": r["strategy"].map(strategy_label),
            "Seed": r["seed"],
            "Reward": r["reward"],
            "Prompt set": r["prompt_set"],
            "Status": r["status"],
            "Points": r["n_points"],
            "Last step": r["last_step"].map(lambda x: "–" if pd.isna(x) else f"{x:,.0f}"),
            "Commit": r["git_commit"].map(lambda c: c[:10] if isinstance(c, str) else "–"),
        }
    )


def run_configs(study: StudyResults) -> list[tuple[str, str]]:
    """(label, text) per run: its config.yaml, or its logged params when it has none."""
    out = []
    for r in study.runs.itertuples():
        text = study.configs.get(r.run_id)
        if text is None and r.params:
            text = "\n".join(f"{k}: {v}" for k, v in sorted(r.params.items()))
        tags = ", ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
        if text or tags:
            out.append(
                (
                    f"{r.run_name} ({r.algorithm}, {r.strategy}, seed {r.seed})",
                    (f"# tags: {tags}\n" if tags else "") + (text or ""),
                )
            )
    return out


def study_provenance(study: StudyResults, command: list[str] | None, store: str) -> dict:
    prov = provenance.collect(command)
    commits = sorted({c for c in study.runs["git_commit"] if isinstance(c, str)})
    prov = {
        "study": study.name,
        "tracking_store": store,
        "experiments": ", ".join(sorted(study.runs["experiment"].unique())),
        "runs": str(len(study.runs)),
        "run_git_commits": ", ".join(commits) or "not recorded",
        **prov,
    }
    prov["report_git_commit"] = prov.pop("git_commit")
    return prov


def report_files() -> tuple[str, ...]:
    """The patterns of what a report writes into its folder."""
    return ("index.html", VERDICT_MD, "figures/*.png", "figures/*.svg", "tables/*.csv", "tables/*.tex")


def remove_previous_report(out_dir: Path) -> None:
    """Delete what an earlier report wrote here (the page, its figures and tables), so no figure of
    another study or an older version of this one survives beside the new report."""
    for pattern in report_files():
        for old in out_dir.glob(pattern):
            old.unlink()


def replace_report(staged: Path, out_dir: Path) -> None:
    """Put the complete report built in ``staged`` in place of the one in ``out_dir`` (whose other
    files are left alone), then remove ``staged``."""
    remove_previous_report(out_dir)
    for pattern in report_files():
        for new in sorted(staged.glob(pattern)):
            target = out_dir / new.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, target)
    shutil.rmtree(staged, ignore_errors=True)


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
    """Load the study, compute the verdict and tables, draw the figures and write the report folder.
    The report is built beside ``out`` and replaces the previous one only once it is complete: a
    failure leaves the last report as it was."""
    if reps < 1:
        raise ValueError(f"--reps must be at least 1 (bootstrap resamples), got {reps}")
    out_dir = Path(out) if out else Path("reports") / (Path(path).resolve().name if path else "study")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; give a folder for the report")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="diffexp-report-") as cache:  # downloaded artifacts, dropped afterwards
            result = _build(path, staged, tracking_uri, experiments, budgets, reps, seed, command, Path(cache))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    out_dir.mkdir(parents=True, exist_ok=True)
    replace_report(staged, out_dir)
    return _moved(result, staged, out_dir)


def _moved(result: ReportResult, staged: Path, out_dir: Path) -> ReportResult:
    def move(p: Path) -> Path:
        return out_dir / Path(p).relative_to(staged)

    figures = [dataclasses.replace(f, png=move(f.png), svg=move(f.svg)) for f in result.figures]
    return dataclasses.replace(
        result,
        out_dir=out_dir,
        html=move(result.html),
        figures=figures,
        table_files=[move(p) for p in result.table_files],
    )


def _build(path, out_dir: Path, tracking_uri, experiments, budgets, reps, seed, command, cache: Path) -> ReportResult:
    study = load_results(path, tracking_uri, experiments, cache_dir=cache)
    study_dir = Path(path) if path is not None and Path(path).is_dir() else None
    scrub = PathScrubber(study_dir)
    built = tables.build_tables(study.metrics, budgets=budgets, reps=reps, seed=seed)
    metric_names = set(study.metrics["metric"])
    has_heldout = verdict.HELDOUT_METRIC in metric_names
    verdict_rows = (
        verdict.verdict_table(study.metrics, reps=reps, seed=seed)
        if has_heldout
        else pd.DataFrame(columns=verdict.COLUMNS)
    )
    sentences = verdict.cell_sentences(verdict_rows)
    outcomes = verdict.outcome_table(study.metrics) if has_heldout else pd.DataFrame()
    verdict_display = verdict.display_table(verdict_rows)
    outcome_display = verdict.outcome_display(outcomes)
    extra_blocks = []
    if not verdict_display.empty:
        extra_blocks.append(
            ("verdict", "Verdict on the evaluation-set reward at each cell's final budget", verdict_display)
        )
    if not outcome_display.empty:
        extra_blocks.append(
            (
                "ground_truth",
                "Evaluation-set ground truths, other rewards and diversity: base model → final (gain [95% t CI])",
                outcome_display,
            )
        )
    table_files = write_tables(built, out_dir, extra_blocks)
    folder = out_dir / "tables"
    verdict_rows.to_csv(folder / "verdict.csv", index=False)
    outcomes.to_csv(folder / "ground_truth.csv", index=False)
    table_files += [folder / "verdict.csv", folder / "ground_truth.csv"]
    figure_files = figs.make_figures(study.metrics, out_dir, seed=seed)
    samples = sample_figures(study, out_dir)
    n_runs = len(study.runs)
    strategies = (
        ", ".join(strategy_label(s) for s in ordered(study.runs["strategy"].unique(), strategy_order()))
        if n_runs
        else "none"
    )
    store = store_label(study.tracking_uri, study_dir)
    notes = [scrub(n) for n in study.notes]
    if not has_heldout and n_runs:
        notes.append("no evaluation-set reward (eval_reward_mean) was logged, so there is no verdict")
    page = page_html.Page(
        title=f"diffexp report: {study.name}",
        subtitle=f"{n_runs} runs · strategies: {strategies} · store: {store}",
        verdict_sentences=sentences,
        verdict=verdict_display,
        verdict_note=VERDICT_NOTE + (" Evaluation sets: " + "; ".join(evaluation_sets(study)) + "." if n_runs else ""),
        outcomes=outcome_display,
        figures=[
            page_html.Figure(f.title, f.caption, figs.png_bytes(f.png), f.key, figs.svg_panels(f.svg))
            for f in figure_files
        ],
        samples=[page_html.Figure(title, caption, figs.png_bytes(png), png.stem) for title, caption, png in samples],
        tables=[(k, t, df) for k, t, df in display_blocks(built)],
        runs=runs_table(study),
        provenance={
            k: (scrub(v) if isinstance(v, str) else v) for k, v in study_provenance(study, command, store).items()
        },
        configs=[(scrub(label), scrub(text)) for label, text in run_configs(study)],
        notes=notes,
    )
    html_path = page_html.write(page, out_dir / "index.html")
    (out_dir / VERDICT_MD).write_text(verdict_markdown(study.name, sentences), encoding="utf-8")
    return ReportResult(out_dir, html_path, verdict_rows, sentences, figure_files, table_files, study)


VERDICT_MD = "verdict.md"


def verdict_markdown(name: str, sentences: list[str]) -> str:
    """The verdict's sentences as a Markdown list (what the README quotes)."""
    lines = [f"- {s}" for s in sentences] or ["- no verdict: the study logged no evaluation-set reward"]
    return "\n".join(lines) + "\n"


VERDICT_NOTE = (
    "Each cell's runs are evaluated on the same evaluation set (fixed prompts and noise, never trained on), without "
    "exploration, at 0 queries (the base model) and on a cadence during training. s is the cell's seed-to-seed "
    "standard deviation of the final value, pooled over its strategies (ν = its degrees of freedom); each "
    "strategy's own is shown as Seed std. Gain over base: final minus base model, mean ± t(0.975, ν)·s/√n; the "
    "baseline learned when every seed gained and that interval excludes 0. Δ vs baseline, blocked by seed (every "
    "arm ran the same seeds, which fix the LoRA initialisation, the prompts and the noise the arms share): the mean "
    "within-seed difference ± t(0.975, ν_e)·s_e·√(2/b), s_e the residual standard deviation of the seed × strategy "
    "layout on ν_e = (arms − 1)(seeds − 1) degrees of freedom; unpaired (seeds not shared): ± t(0.975, ν)·s·√(2/n). "
    "The Analysis column says which; not corrected for several comparisons. Detectable Δ: the smallest true "
    "difference that same test finds with 80% power (solved on the noncentral t). Queries to the baseline's final: "
    "where a strategy's mean curve first reaches the baseline's final mean (interpolated between evaluations; 95% "
    "bootstrap interval over seeds), shown when the baseline learned."
)
