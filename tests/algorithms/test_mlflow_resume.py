"""A training's MLflow run: tags and params, resumed by id, one metric history, one seed in a report."""

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from diffexp.algorithms.config import load_config
from diffexp.algorithms.mlflow_run import default_tracking_uri
from diffexp.algorithms.runner import run
from diffexp.reporting.load import load_results

CONFIG = {
    "model": {"pretrained": "tiny-sd15"},
    "sample": {"num_steps": 3, "batch_size": 4, "num_batches_per_epoch": 1},
    "exploration": {"strategy": "cfg"},
    "prompts": {"set": "list", "prompts": ["a cat", "a (red)1.2 dog"], "eval_options": {}},
    "reward": {"name": "brightness"},
    "train": {"batch_size": 2, "gradient_accumulation_steps": 1, "stat_tracking": {"min_count": 2, "buffer_size": 4}},
    "run": {
        "num_epochs": 4,
        "eval_every": 2,
        "eval_num_prompts": 1,
        "loggers": ["csv", "mlflow"],
        "threads": 1,
        "deterministic": True,
        "seed": 3,
    },
}


def only_run(tmp_path):
    client = MlflowClient(tracking_uri=default_tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name("m")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["update", "commit"])  # commit: killed after a checkpoint, before its metrics went
def test_killed_and_resumed_training_is_one_finished_mlflow_run_with_one_history(tmp_path, phase):
    cfg = {**CONFIG, "run": {**CONFIG["run"], "output_dir": str(tmp_path), "name": "m"}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.algorithms.fault_injection", str(path), phase, "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    client, runs = only_run(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # killed: nothing could mark it
    resumed = subprocess.run(
        [sys.executable, "-m", "diffexp", "train", "--config", str(path)], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client, runs = only_run(tmp_path)
    assert len(runs) == 1
    record = runs[0]
    assert record.info.status == "FINISHED"
    assert {k: record.data.tags[k] for k in ("algorithm", "strategy", "seed", "reward")} == {
        "algorithm": "ddpo",
        "strategy": "cfg",
        "seed": "3",
        "reward": "brightness",
    }
    assert record.data.params["run.seed"] == "3" and record.data.params["train.learning_rate"] == "0.0003"
    for metric in ["reward_queries", "reward_mean", "eval_reward_mean"]:
        steps = [m.step for m in client.get_metric_history(record.info.run_id, metric)]
        assert len(steps) == len(set(steps)), (metric, steps)  # each step once
    assert [m.step for m in client.get_metric_history(record.info.run_id, "reward_queries")] == [0, 4, 8, 12, 16]
    assert [m.step for m in client.get_metric_history(record.info.run_id, "eval_reward_mean")] == [0, 8, 16]
    report = load_results(tmp_path / "m")
    assert list(report.runs["seed"]) == ["3"] and list(report.runs["strategy"]) == ["cfg"]


@pytest.mark.slow
def test_a_resume_in_process_continues_the_same_mlflow_run(tmp_path):
    overrides = {"run.output_dir": str(tmp_path), "run.name": "m", "run.num_epochs": 1}
    flat = {f"{section}.{k}": v for section, fields in CONFIG.items() for k, v in fields.items()}
    flat["prompts.eval_options"] = {}
    run(load_config(None, {**flat, **overrides}))
    run(load_config(None, {**flat, **overrides, "run.num_epochs": 2}))
    client, runs = only_run(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "reward_queries")] == [0, 4, 8]
    run(load_config(None, {**flat, **overrides, "run.num_epochs": 1}), resume=False)  # a restart: a new run
    client, runs = only_run(tmp_path)
    assert len(runs) == 2
