"""The MLflow run of a training: created once per run directory, resumed by id, one metric history.

A training's run carries tags (algorithm, strategy, seed, reward, prompt set) and the flattened
config as params, so a report identifies seeds and arms from the run itself. Metrics are held
back until the checkpoint that covers them is on disk (:meth:`RunMLFlowLogger.commit`): epochs a
killed run re-does after its resume are then logged once, never twice.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

PARAM_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def default_tracking_uri(output_dir: str | Path) -> str:
    """MLflow's SQLite store inside the output directory (the ``file:`` store is deprecated)."""
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


#: the schemes of MLflow's tracking stores (a database URI may name its driver: postgresql+psycopg2)
TRACKING_SCHEMES = {"", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks"}


def check_tracking_uri(uri: str, name: str = "run.mlflow_tracking_uri") -> str:
    """``uri`` if it names an MLflow tracking store MLflow knows, else a ValueError that says so."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(
            f"{name} {uri!r}: MLflow has no tracking store for the scheme {scheme!r}; use a sqlite:///path.db, a "
            "folder, http(s)://host:port or a database URI (postgresql://..., mysql://...)"
        )
    return uri


def run_tags(config) -> dict[str, str]:
    """What identifies a run among a study's: algorithm, strategy, seed, reward, prompt set."""
    reward = config.reward.name
    if config.reward.weights:
        reward = "+".join(f"{_weight(w):g}*{n}" for n, w in config.reward.weights.items())
    prompts = config.prompts.set
    if prompts == "list":
        prompts = f"list({len(config.prompts.prompts)})"
    elif config.prompts.options:
        prompts += "(" + ",".join(f"{k}={v}" for k, v in sorted(config.prompts.options.items())) + ")"
    return {
        "algorithm": config.algorithm,
        "strategy": config.exploration.strategy,
        "seed": str(config.run.seed),
        "reward": reward,
        "prompt_set": prompts,
    }


def _weight(part) -> float:
    """A weighted-sum part's weight: a number, or ``{weight: ...}`` (default 1)."""
    return float(part.get("weight", 1.0)) if isinstance(part, dict) else float(part)


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def log_run_record(client, run_id: str, config, extra_params: dict[str, Any] | None = None) -> None:
    """The config as params (those not logged yet: MLflow params cannot change) and as ``config.yaml``."""
    import yaml
    from mlflow.entities import Param

    resolved = config.model_dump(mode="json")
    resolved["run"] = {k: v for k, v in resolved["run"].items() if not k.startswith("mlflow_")}
    params = {**(extra_params or {}), **flatten_config(resolved)}
    existing = client.get_run(run_id).data.params
    batch = []
    for key, value in params.items():
        key = PARAM_CHARS.sub("_", key)[:250]
        if key not in existing:
            batch.append(Param(key, (value if isinstance(value, str) else json.dumps(value))[:6000]))
    for i in range(0, len(batch), 100):
        client.log_batch(run_id, params=batch[i : i + 100])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        client.log_artifact(run_id, str(path))


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger with two additions.

    Metrics wait for :meth:`commit` (the checkpoint callback calls it once the checkpoint is on
    disk), so a resumed run logs each step once. And a sweep worker can :meth:`detach` from a run
    it no longer owns: when the harness declares a worker dead and re-runs its trial into the same
    MLflow run, the old worker must neither log into that run nor mark it FAILED on its way out.
    """

    detached = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: list[tuple[dict, int | None]] = []

    def detach(self) -> None:
        self.detached = True

    def log_metrics(self, metrics, step=None) -> None:
        if not self.detached:
            self.pending.append((dict(metrics), step))

    def commit(self) -> None:
        """Send the metrics held back so far (their epochs are covered by a checkpoint on disk)."""
        pending, self.pending = self.pending, []
        if not self.detached:
            for metrics, step in pending:
                super().log_metrics(metrics, step)

    def recover(self, checkpointed: list[tuple[dict, int]]) -> None:
        """Send what a killed run had checkpointed but not yet committed (it died between the two):
        the held-back metrics the checkpoint carries, past the last step the run has."""
        if self.detached or not checkpointed:
            return
        history = self.experiment.get_metric_history(self.run_id, "reward_queries")
        last = max((m.step for m in history), default=-1)
        for metrics, step in checkpointed:
            if step is not None and step > last:
                super().log_metrics(metrics, step)

    def log_hyperparams(self, params) -> None:
        if not self.detached:
            super().log_hyperparams(params)

    def finalize(self, status: str = "success") -> None:
        if self.detached:
            return
        if status == "success":
            self.commit()
        super().finalize(status)


def build_mlflow_logger(config, directory, resumed: bool) -> RunMLFlowLogger:
    """The logger of ``directory``'s MLflow run: the sweep's run (``run.mlflow_run_id``), else the one
    this directory logged into before (a resume), else a new run with tags, params and config."""
    from mlflow.tracking import MlflowClient

    uri = config.run.mlflow_tracking_uri or default_tracking_uri(config.run.output_dir)
    client = MlflowClient(tracking_uri=uri)
    run_id = config.run.mlflow_run_id
    if run_id is None and resumed and directory.primary:
        run_id = directory.stored_mlflow_run(uri)
        if run_id is not None:
            try:
                if client.get_run(run_id).info.lifecycle_stage == "deleted":
                    run_id = None
            except Exception:  # the store was replaced or the run removed: start a new run
                run_id = None
            if run_id is not None:
                client.update_run(run_id, status="RUNNING")
    logger = RunMLFlowLogger(
        experiment_name=config.run.mlflow_experiment or config.run.name,
        tracking_uri=uri,
        run_name=config.run.name,
        run_id=run_id,
        tags=None if run_id else {**run_tags(config), **config.run.mlflow_tags},
    )
    if not directory.primary:  # DDP's other ranks log nothing
        return logger
    if run_id is None:  # a new run: record what it is
        log_run_record(client, logger.run_id, config)
    if config.run.mlflow_run_id is None:
        directory.store_mlflow_run(uri, logger.run_id)
    return logger
