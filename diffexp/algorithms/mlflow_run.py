"""MLflow runs: one per training, created once per run directory (or per sweep trial), resumed by id.

A run carries tags (algorithm, strategy, seed, reward, prompt set, config hash) and the flattened
config as params, so a report identifies seeds and arms from the run itself. Metrics are held
back until the checkpoint that covers them is on disk (:meth:`RunMLFlowLogger.commit`): epochs a
killed run re-does after its resume are then logged once, never twice.

In a sweep, :class:`Tracker` creates each trial's run (name = the trial key, params = the sweep
params and the resolved config, tags = the identity, the checkpoint location, the Optuna study and
trial) and hands its id to the trainer (``run.mlflow_run_id``), which logs every metric against
``reward_queries`` and the evaluation images; a retried trial (its worker died) finds its run by
the ``trial_key`` tag and goes on logging into it, so there is one run per trial key whatever
happened; the tracker closes it with the trial's state. The names are in :mod:`run_record`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from diffexp.algorithms import run_record as rec
from diffexp.algorithms.run_identity import flatten_config, run_tags
from diffexp.algorithms.sqlite_lock import tracking_schema_lock

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
        path = Path(tmp) / rec.CONFIG_NAME
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


def tracking_uri_for(uri: str | None, run_dir: str | Path) -> str:
    """The tracking URI to use: the given one, or SQLite inside the run directory."""
    return uri or default_tracking_uri(run_dir)


def _is_local(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


class Tracker:
    """An MLflow client bound to one study's experiment: it creates each trial's run (or finds a
    retried trial's), records the config and tags, and closes the run with the trial's state;
    the trainer logs the metrics into it (``run.mlflow_run_id``)."""

    def __init__(self, uri: str, experiment: str, run_dir: str | Path):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment_name = experiment
        self.run_dir = Path(run_dir).resolve()
        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables...": noise
            logging.getLogger(name).setLevel(logging.WARNING)
        with tracking_schema_lock(uri):  # two launchers on a new SQLite store would both create its tables
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)  # the first access creates the schema
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.ensure_experiment()
        return self._experiment_id

    def ensure_experiment(self) -> str:
        """Get or create the study's experiment (artifacts in the run directory for local stores)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = (self.run_dir / "mlartifacts").as_uri() if _is_local(self.uri) else None
        try:
            return self.client.create_experiment(
                self.experiment_name, artifact_location=location, tags={rec.EXPERIMENT_KIND_TAG: "sweep"}
            )
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def find_run(self, trial_key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{rec.TRIAL_KEY_TAG} = '{trial_key}'", max_results=5
        )
        if not runs:
            return None
        return min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)).info.run_id

    def start_trial(self, trial_key: str, tags: dict[str, str], params: dict[str, Any], config) -> str:
        """The trial's MLflow run (existing one for a retried trial), with params, tags and the config."""
        from mlflow.entities import RunTag

        run_id = self.find_run(trial_key)
        if run_id is None:
            created = self.client.create_run(
                self.experiment_id, run_name=trial_key, tags={rec.TRIAL_KEY_TAG: trial_key}
            ).info.run_id
            # A worker whose trial was declared dead (no heartbeat) may start its run at the same
            # moment as the retry: the earliest run wins, so a cell never has two.
            run_id = self.find_run(trial_key)
            if run_id != created:
                self.client.delete_run(created)
        else:
            self.client.update_run(run_id, status="RUNNING")
        log_run_record(self.client, run_id, config, {f"{rec.SWEEP_PARAM_PREFIX}{k}": v for k, v in params.items()})
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return run_id

    def finish_trial(self, run_id: str, state: str, value: float | None, tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import RunTag

        extra = {rec.TRIAL_STATE_TAG: state, **(tags or {})}
        if value is not None:
            extra[rec.OBJECTIVE_TAG] = repr(float(value))
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in extra.items()])
        self.client.set_terminated(run_id, rec.RUN_STATUS.get(state, "FAILED"))

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)
