"""MLflow -> pandas: one tidy table of metric histories per study, plus run metadata and artifacts.

Everything downstream (statistics, figures, tables) works on plain DataFrames, so it can be tested
without MLflow. The loader is forgiving because studies come from different producers (the sweep
harness, a single ``diffexp train``, older runs): a missing tag falls back to the flattened config
param, then to a neutral value (``seed`` falls back to the run's name: a seed is never guessed from
run order).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd

from diffexp.algorithms import run_record as rec
from diffexp.algorithms.run_record import CONFIG_NAME
from diffexp.evaluation.artifacts import EVAL_IMAGE_DIR, PROMPTS_NAME, parse_eval_image

#: identifying columns carried on every row of the long metric table
ID_COLUMNS = ["run_id", *rec.IDENTITY_TAGS, "task"]
#: metrics that are bookkeeping, not curves
SKIP_METRICS = {"reward_queries", "epoch"}
#: tag name -> flattened-config params to fall back on (both "." and "/" separators are tried)
FALLBACK_PARAMS = {
    "algorithm": ["algorithm"],
    "strategy": ["exploration.strategy", "strategy"],
    "seed": ["run.seed", "seed"],
    "reward": ["reward.name", "reward"],
    "prompt_set": ["prompts.set", "prompt_set"],
}
IMAGE_COLUMNS = ["run_id", "kind", "step", "path"]
#: Optuna trial states (the harness's ``optuna.state`` tag) whose truncated curves are left out
DROPPED_TRIAL_STATES = {"PRUNED", "FAIL"}


@dataclass
class StudyResults:
    """A study as tidy tables.

    ``runs``: one row per run (run_id, run_name, experiment, status, the identifying columns,
    n_points, last_step, git_commit) plus ``tags``/``params`` dicts.
    ``metrics``: long table, one row per (run, metric, step) with the identifying columns;
    ``step`` is the number of reward queries.
    ``images``: evaluation images, one row per (run, kind, step) with a local ``path``; ``kind``
    is "grid" (captioned) or "samples" (the uncaptioned strip, see ``diffexp.evaluation.artifacts``).
    ``configs``: run_id -> config.yaml text (when the run logged one).
    ``eval_prompts``: run_id -> the evaluation prompts in the order of its sample strips.
    """

    name: str
    tracking_uri: str
    runs: pd.DataFrame
    metrics: pd.DataFrame
    images: pd.DataFrame
    configs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    eval_prompts: dict[str, list[str]] = field(default_factory=dict)


def resolve_source(path: Path | str | None, tracking_uri: str | None = None, experiments: list[str] | None = None):
    """Work out (tracking URI, experiment names or None for all, run name filter or None, study name).

    A study directory holds ``mlflow.db``; a run directory's store is its parent's (the runner's
    default ``sqlite:///<output_dir>/mlflow.db``) with experiment = run name.
    """
    path = Path(path) if path is not None else None
    name = path.resolve().name if path is not None else "study"
    if tracking_uri:
        return tracking_uri, experiments, None, name
    if path is None:
        raise FileNotFoundError("give a study/run directory or --tracking-uri")
    if (path / "mlflow.db").is_file():
        return f"sqlite:///{(path / 'mlflow.db').resolve()}", experiments, None, name
    if (path.parent / "mlflow.db").is_file():
        # a run directory: its runs are the experiment named after it (or runs of that name)
        return (
            f"sqlite:///{(path.parent / 'mlflow.db').resolve()}",
            experiments,
            None if experiments else path.resolve().name,
            name,
        )
    if (path / "mlruns").is_dir():
        return (path / "mlruns").resolve().as_uri(), experiments, None, name
    raise FileNotFoundError(
        f"no MLflow store found: neither {path / 'mlflow.db'} nor {path.parent / 'mlflow.db'} exists (use "
        "--tracking-uri)"
    )


def _param(params: dict, names: list[str]):
    for n in names:
        for key in (n, n.replace(".", "/")):
            if key in params and params[key] not in ("", "None"):
                return params[key]
    return None


def _identity(tags: dict, params: dict) -> dict:
    out = {}
    for key, fallbacks in FALLBACK_PARAMS.items():
        value = tags.get(key) or _param(params, fallbacks)
        out[key] = None if value is None else str(value)
    return out


def _all_runs(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _select_experiments(client, names: list[str] | None, run_name: str | None):
    """Experiments to read: the named ones, or (for a run directory) the one named after it, or all."""
    from mlflow.entities import ViewType

    every, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        every.extend(page)
        token = page.token
        if not token:
            break
    if names:
        chosen = [e for e in every if e.name in names]
        missing = set(names) - {e.name for e in chosen}
        if missing:
            raise ValueError(f"experiment(s) not found: {sorted(missing)}; available: {sorted(e.name for e in every)}")
        return chosen, None
    if run_name is not None:
        named = [e for e in every if e.name == run_name]
        if named:
            return named, None
    return every, run_name


def _local_artifact_root(run) -> Path | None:
    """The run's artifact folder when it is on this machine (``file:`` URIs): read in place."""
    uri = run.info.artifact_uri or ""
    parsed = urlparse(uri)
    if parsed.scheme == "file" or (uri and not parsed.scheme):
        root = Path(url2pathname(parsed.path)) if parsed.scheme else Path(uri)
        return root if root.is_dir() else None
    return None


def _remote_artifacts(client, run_id: str, cache: Path) -> tuple[list[Path], Path | None]:
    """Download the evaluation files and config.yaml from a remote artifact store (without progress bars)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        listed = {f.path for f in client.list_artifacts(run_id)}
        names = [f.path for f in client.list_artifacts(run_id, EVAL_IMAGE_DIR)] if EVAL_IMAGE_DIR in listed else []
        wanted = [p for p in names if parse_eval_image(Path(p).name) or Path(p).name == PROMPTS_NAME]
        files = [Path(client.download_artifacts(run_id, p, str(cache / run_id))) for p in wanted]
        config = (
            Path(client.download_artifacts(run_id, CONFIG_NAME, str(cache / run_id))) if CONFIG_NAME in listed else None
        )
        return files, config
    except Exception:  # an unreachable artifact store should not stop the report
        return [], None


def _eval_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if parse_eval_image(p.name) or p.name == PROMPTS_NAME)


def _artifacts(client, run, cache: Path) -> tuple[list[tuple[str, int, Path]], list[str] | None, str | None]:
    """The evaluation files of one run (``diffexp.evaluation.artifacts``: (kind, queries, path)
    per image, and the evaluation prompts) and its ``config.yaml``, falling back to the run's
    folder on disk (``run_dir`` / ``checkpoint_dir`` tags) when nothing was logged."""
    root = _local_artifact_root(run)
    if root is not None:
        files = _eval_files(root / EVAL_IMAGE_DIR) if (root / EVAL_IMAGE_DIR).is_dir() else []
        config_path = root / CONFIG_NAME if (root / CONFIG_NAME).is_file() else None
    else:
        files, config_path = _remote_artifacts(client, run.info.run_id, cache)
    folders = [Path(run.data.tags[k]) for k in (rec.RUN_DIR_TAG, rec.CHECKPOINT_DIR_TAG) if run.data.tags.get(k)]
    if not files or config_path is None:
        for folder in [f for d in folders for f in (d, d.parent)]:
            if not files and (folder / EVAL_IMAGE_DIR).is_dir():
                files = _eval_files(folder / EVAL_IMAGE_DIR)
            if config_path is None and (folder / CONFIG_NAME).is_file():
                config_path = folder / CONFIG_NAME
    images = sorted((e.kind, e.queries, p) for p in files if (e := parse_eval_image(p.name)))
    prompts_file = next((p for p in files if p.name == PROMPTS_NAME), None)
    prompts = json.loads(prompts_file.read_text()) if prompts_file is not None else None
    config = config_path.read_text(errors="replace") if config_path is not None else None
    return images, prompts, config


#: metrics a diverged training makes NaN; elsewhere NaN means "not defined" (e.g. the training batch's
#: within-prompt diversity when no prompt was drawn twice), which is no sign of divergence
DIVERGENCE_METRICS = ("reward_mean", "eval_reward_mean", "loss", "grad_norm")


def _diverged(metric: str, values) -> bool:
    values = np.asarray(values, dtype=float)
    infinite = np.abs(values) >= np.finfo(float).max  # MLflow's SQL stores keep inf as the largest float
    return bool(infinite.any()) or (metric in DIVERGENCE_METRICS and bool(np.isnan(values).any()))


def load_results(
    path: Path | str | None = None,
    tracking_uri: str | None = None,
    experiments: list[str] | None = None,
    cache_dir: Path | str | None = None,
    include_failed: bool = False,
) -> StudyResults:
    """Read every run of the study into a :class:`StudyResults`. Runs whose status is FAILED, or whose
    Optuna trial was pruned or failed, are left out unless ``include_failed`` (their truncated curves
    would shrink the common query budget); ``StudyResults.notes`` lists them."""
    from mlflow.tracking import MlflowClient

    uri, names, run_name, study_name = resolve_source(path, tracking_uri, experiments)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if store is not None and (not store.is_file() or store.stat().st_size == 0):
        # MLflow would create its tables in a store the report must only read
        raise ValueError(f"{store} is {'empty' if store.is_file() else 'missing'}: not an MLflow store with a study")
    client = MlflowClient(tracking_uri=uri)
    chosen, run_name_filter = _select_experiments(client, names, run_name)
    if names and len(names) == 1:
        study_name = names[0]
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="diffexp-report-"))
    exp_names = {e.experiment_id: e.name for e in chosen}
    notes: list[str] = []
    rows, metric_frames, image_rows, configs, eval_prompts = [], [], [], {}, {}
    for run in _all_runs(client, list(exp_names)) if exp_names else []:
        if run_name_filter is not None and run.info.run_name != run_name_filter:
            continue
        state = run.data.tags.get(rec.TRIAL_STATE_TAG, "")
        if (run.info.status == "FAILED" or state in DROPPED_TRIAL_STATES) and not include_failed:
            notes.append(
                f"left out {state if state in DROPPED_TRIAL_STATES else 'FAILED'} run {run.info.run_name} "
                f"({run.info.run_id})"
            )
            continue
        tags, params = dict(run.data.tags), dict(run.data.params)
        ident = _identity(tags, params)
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name or run.info.run_id,
            "experiment": exp_names[run.info.experiment_id],
            "status": run.info.status,
            "start_time": run.info.start_time,
            "git_commit": next((tags[t] for t in rec.GIT_COMMIT_TAGS if tags.get(t)), None),
            "config_hash": tags.get(rec.CONFIG_HASH_TAG),
            **ident,
            "tags": {k: v for k, v in tags.items() if not k.startswith("mlflow.")},
            "params": params,
        }
        frames = []
        for key in run.data.metrics:
            if key in SKIP_METRICS:
                continue
            history = client.get_metric_history(run.info.run_id, key)
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": run.info.run_id,
                        "metric": key,
                        "step": [m.step for m in history],
                        "value": [m.value for m in history],
                        "timestamp": [m.timestamp for m in history],
                    }
                )
            )
        non_finite = sorted({f["metric"].iloc[0] for f in frames if _diverged(f["metric"].iloc[0], f["value"])})
        if non_finite and not include_failed:
            notes.append(
                f"left out run {row['run_name']} ({run.info.run_id}): non-finite values in "
                f"{', '.join(non_finite)} (a diverged training)"
            )
            continue
        if ident["seed"] is None:
            notes.append(
                f"run {row['run_name']} names no seed (no seed tag or run.seed param): it counts as a seed of its own"
            )
        rows.append(row)
        metric_frames += frames
        images, prompts, config = _artifacts(client, run, cache)
        image_rows += [
            {"run_id": run.info.run_id, "kind": kind, "step": step, "path": str(p)} for kind, step, p in images
        ]
        if prompts is not None:
            eval_prompts[run.info.run_id] = prompts
        if config is not None:
            configs[run.info.run_id] = config
    runs = _finish_runs(pd.DataFrame(rows, columns=_RUN_COLUMNS))
    metrics = _finish_metrics(metric_frames, runs)
    runs = _add_run_summary(runs, metrics)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS).merge(runs[ID_COLUMNS], on="run_id")
    if runs.empty:
        notes.append("no runs found")
    return StudyResults(
        name=study_name,
        tracking_uri=uri,
        runs=runs,
        metrics=metrics,
        images=images,
        configs=configs,
        notes=notes,
        eval_prompts=eval_prompts,
    )


_RUN_COLUMNS = [
    "run_id",
    "run_name",
    "experiment",
    "status",
    "start_time",
    "git_commit",
    "config_hash",
    "algorithm",
    "strategy",
    "seed",
    "reward",
    "prompt_set",
    "tags",
    "params",
]


def _finish_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill neutral values (a run without a seed is a seed of its own, named by the run); add ``task``
    (reward, plus prompt set when a study has several), the unit of one figure panel / table block."""
    runs = runs.copy()
    runs["algorithm"] = runs["algorithm"].fillna("unknown")
    runs["strategy"] = runs["strategy"].fillna("unknown")
    runs["reward"] = runs["reward"].fillna("reward")
    runs["prompt_set"] = runs["prompt_set"].fillna("")
    runs["seed"] = runs["seed"].where(runs["seed"].notna(), runs["run_name"])  # never the run order
    several_sets = runs["prompt_set"].nunique() > 1
    runs["task"] = runs["reward"] + ((" · " + runs["prompt_set"]) if several_sets else "")
    return runs.reset_index(drop=True)


def _finish_metrics(frames: list[pd.DataFrame], runs: pd.DataFrame) -> pd.DataFrame:
    """Concatenate histories, keep the last value logged per (run, metric, step) (a resumed run may
    log a step twice) and attach the identifying columns."""
    columns = ID_COLUMNS + ["metric", "step", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    long = pd.concat(frames, ignore_index=True).sort_values(["run_id", "metric", "step", "timestamp"])
    long = long.drop_duplicates(["run_id", "metric", "step"], keep="last").drop(columns="timestamp")
    long = long.merge(runs[ID_COLUMNS], on="run_id", how="inner")
    long["step"] = long["step"].astype("int64")
    long["value"] = long["value"].astype(float)
    return long[columns].reset_index(drop=True)


def _add_run_summary(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    stats = metrics.groupby("run_id")["step"].agg(n_points="nunique", last_step="max")
    runs = runs.merge(stats, left_on="run_id", right_index=True, how="left")
    runs["n_points"] = runs["n_points"].fillna(0).astype(int)
    return runs


def study_from_frames(metrics: pd.DataFrame, name: str = "synthetic") -> StudyResults:
    """A :class:`StudyResults` from an in-memory long table (columns: run_id, algorithm, strategy, seed,
    metric, step, value; optional reward/prompt_set): for tests and notebooks."""
    metrics = metrics.copy()
    for col, default in (("reward", "reward"), ("prompt_set", "")):
        if col not in metrics:
            metrics[col] = default
    runs = metrics.drop_duplicates("run_id")[["run_id", "algorithm", "strategy", "seed", "reward", "prompt_set"]]
    runs = runs.assign(
        run_name=runs["run_id"],
        experiment=name,
        status="FINISHED",
        start_time=0,
        git_commit=None,
        config_hash=None,
        tags=[{}] * len(runs),
        params=[{}] * len(runs),
    )
    runs = _finish_runs(runs[_RUN_COLUMNS])
    long = metrics[["run_id", "metric", "step", "value"]].assign(timestamp=0)
    metrics = _finish_metrics([long], runs)
    return StudyResults(
        name=name,
        tracking_uri="memory",
        runs=_add_run_summary(runs, metrics),
        metrics=metrics,
        images=pd.DataFrame(columns=IMAGE_COLUMNS + ID_COLUMNS[1:]),
    )
