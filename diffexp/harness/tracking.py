"""MLflow bookkeeping: one experiment per study, one run per trial (grid cell or search trial).

The harness creates each trial's run (name = the trial key, params = the sweep params and the
flattened resolved config, tags = algorithm/strategy/seed/reward/prompt set/config hash, the
checkpoint location, the Optuna study and trial), uploads the resolved config as an artifact,
and hands the run id to the trainer (``run.mlflow_run_id``), which logs every metric against
``reward_queries`` and the evaluation images (``eval_images/``). A retried trial (its worker
died) finds its run by the ``trial_key`` tag and goes on logging into it, so there is one run
per trial key whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from diffexp.algorithms.mlflow_run import default_tracking_uri, log_run_record
from diffexp.harness.storage import schema_lock

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def tracking_uri_for(uri: str | None, run_dir: str | Path) -> str:
    """The tracking URI to use: the given one, or SQLite inside the run directory."""
    return uri or default_tracking_uri(run_dir)


def _is_local(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


@contextlib.contextmanager
def _schema_lock(uri: str):
    """:func:`schema_lock` for a SQLite tracking store; nothing for a server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with schema_lock(Path(uri.removeprefix("sqlite:///"))):
        yield


class Tracker:
    """An MLflow client bound to one study's experiment."""

    def __init__(self, uri: str, experiment: str, run_dir: str | Path):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment_name = experiment
        self.run_dir = Path(run_dir).resolve()
        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables...": noise
            logging.getLogger(name).setLevel(logging.WARNING)
        with _schema_lock(uri):  # two launchers on a new SQLite store would both create its tables
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
                self.experiment_name, artifact_location=location, tags={"diffexp.kind": "sweep"}
            )
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def find_run(self, trial_key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.trial_key = '{trial_key}'", max_results=5
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
                self.experiment_id, run_name=trial_key, tags={"trial_key": trial_key}
            ).info.run_id
            # A worker whose trial was declared dead (no heartbeat) may start its run at the same
            # moment as the retry: the earliest run wins, so a cell never has two.
            run_id = self.find_run(trial_key)
            if run_id != created:
                self.client.delete_run(created)
        else:
            self.client.update_run(run_id, status="RUNNING")
        log_run_record(self.client, run_id, config, {f"sweep.{k}": v for k, v in params.items()})
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return run_id

    def finish_trial(self, run_id: str, state: str, value: float | None, tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import RunTag

        extra = {"optuna.state": state, **(tags or {})}
        if value is not None:
            extra["objective"] = repr(float(value))
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in extra.items()])
        self.client.set_terminated(run_id, STATUS.get(state, "FAILED"))

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)
