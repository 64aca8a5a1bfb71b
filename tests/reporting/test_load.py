"""MLflow -> tidy tables: tags, fallbacks, artifacts, store resolution."""

from __future__ import annotations

import pytest

from diffexp.reporting.load import ID_COLUMNS, load_results, resolve_source


@pytest.fixture(scope="module")
def study(mlflow_study):
    return load_results(mlflow_study["root"], experiments=["study"])


def test_runs_and_identity_columns(study):
    runs = study.runs
    assert len(runs) == 36  # the FAILED run is left out, with a note
    assert any("FAILED" in n for n in study.notes)
    assert set(runs["algorithm"]) == {"ddpo", "alignprop"}
    assert set(runs["strategy"]) == {"baseline", "cfg", "phrase", "diffexp"}
    assert set(runs["seed"]) == {"0", "1", "2"}
    assert set(runs["task"]) == {"embedded_aesthetic · embedded_objects", "embedded_alignment · embedded_relations"}
    assert set(runs["git_commit"]) == {"0123456789abcdef"}


def test_long_metric_table(study):
    m = study.metrics
    assert list(m.columns) == ID_COLUMNS + ["metric", "step", "value"]
    assert "reward_queries" not in set(m["metric"])  # bookkeeping, it is the x-axis already
    assert {"reward_mean", "diversity", "eval_reward_mean", "eval_gt_accuracy", "approx_kl"} <= set(m["metric"])
    one = m[
        (m["metric"] == "reward_mean")
        & (m["algorithm"] == "ddpo")
        & (m["strategy"] == "diffexp")
        & (m["seed"] == "1")
        & (m["reward"] == "embedded_aesthetic")
    ]
    assert one["step"].tolist() == [32 * k for k in range(1, 11)]


def test_artifacts(study):
    images = study.images
    assert len(images) == 12 * 6 * 2  # seed-0 runs, 6 evaluations, a grid and a sample strip each
    assert set(images["seed"]) == {"0"} and set(images["kind"]) == {"grid", "samples"}
    assert sorted(images["step"].unique()) == [0, 64, 128, 192, 256, 320]
    assert len(study.eval_prompts) == 12 and all(len(p) == 4 for p in study.eval_prompts.values())
    assert len(study.configs) == 36 and all("<script>alert(1)</script>" in c for c in study.configs.values())


def test_missing_tags_fall_back(mlflow_study):
    bare = load_results(mlflow_study["root"], experiments=["bare"])
    assert list(bare.runs["algorithm"]) == ["unknown", "unknown"]
    assert sorted(bare.runs["seed"]) == ["bare-0", "bare-1"]  # no seed: each run its own, never the run order
    assert sum("names no seed" in n for n in bare.notes) == 2
    assert len(bare.metrics) == 6


def test_resolve_source(mlflow_study, tmp_path):
    root = mlflow_study["root"]
    uri, experiments, run_filter, name = resolve_source(root)
    assert uri == f"sqlite:///{(root / 'mlflow.db').resolve()}" and experiments is None and run_filter is None
    # a run directory: the store is its parent's, the experiment/run named after it
    uri, _, run_filter, _ = resolve_source(root / "hand")
    assert uri.endswith("mlflow.db") and run_filter == "hand"
    assert len(load_results(root / "hand").runs) == 4  # experiment "hand" exists: all its runs
    with pytest.raises(FileNotFoundError):
        resolve_source(tmp_path / "nowhere" / "x")
    with pytest.raises(ValueError, match="not found"):
        load_results(root, experiments=["nope"])


def test_non_finite_runs_are_left_out_with_a_note(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("nan", artifact_location=(tmp_path / "a").as_uri())
    nan, inf = float("nan"), float("inf")
    runs = {
        "fine": [("eval_reward_mean", [0.1, 0.2])],
        # the training batch's diversity is NaN when no prompt was drawn twice: not a divergence
        "undefined diversity": [("eval_reward_mean", [0.1, 0.2]), ("diversity", [nan, 0.3])],
        "diverged": [("eval_reward_mean", [0.1, nan])],
        "infinite": [("eval_reward_mean", [0.1, 0.2]), ("diversity", [0.2, inf])],
    }
    for name, series in runs.items():
        run = client.create_run(experiment, run_name=name, tags={"seed": "0", "strategy": name})
        metrics = [Metric(key, v, 0, step) for key, values in series for step, v in zip([0, 8], values)]
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id)
    study = load_results(tmp_path, tracking_uri=uri, experiments=["nan"])
    assert sorted(study.runs["run_name"]) == ["fine", "undefined diversity"]
    assert any("left out run diverged" in n and "non-finite values in eval_reward_mean" in n for n in study.notes)
    assert any("left out run infinite" in n and "non-finite values in diversity" in n for n in study.notes)
