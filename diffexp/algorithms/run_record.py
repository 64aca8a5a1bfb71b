"""The run record: every name a writer and a reader of a run share, in one place.

A run leaves three records: its folder (``run.output_dir/run.name``), its MLflow run and, when
the sweep harness ran it, its Optuna trial. The trainer, the harness and the reports write and
read them by these names (the evaluation images' names are in :mod:`diffexp.evaluation.artifacts`).
"""

from __future__ import annotations

from pathlib import Path

# -- the run folder ------------------------------------------------------------------------
CONFIG_NAME = "config.yaml"  #: the resolved config (also an MLflow artifact)
RESUMES_NAME = "resumes.jsonl"  #: one line per resume: the fields that changed
MLFLOW_RUN_NAME = "mlflow_run.json"  #: the MLflow run this folder logs into
LOCK_NAME = "run.lock"  #: the OS lock of the one training that holds the folder
HOLDER_NAME = "run.lock.json"  #: who holds it (host, pid, since)
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
TRAIN_LOG_NAME = "train.log"  #: a trial's own console output (the harness captures it)
RESULT_NAME = "result.json"  #: a finished trial's objective value, metrics and config hash


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


# -- MLflow tags ---------------------------------------------------------------------------
#: what identifies a run among a study's (see :func:`diffexp.algorithms.run_identity.run_tags`)
IDENTITY_TAGS = ("algorithm", "strategy", "seed", "reward", "prompt_set")
CONFIG_HASH_TAG = "config_hash"
TRIAL_KEY_TAG = "trial_key"  #: a retried trial finds its run by it
RUN_DIR_TAG = "run_dir"
CHECKPOINT_DIR_TAG = "checkpoint_dir"
WORKER_TAG = "worker"
TRIAL_STATE_TAG = "optuna.state"  #: COMPLETE, PRUNED or FAIL, set when the harness closes the run
OPTUNA_STUDY_TAG = "optuna.study"
OPTUNA_TRIAL_NUMBER_TAG = "optuna.trial_number"
OPTUNA_STORAGE_TAG = "optuna.storage"
OBJECTIVE_TAG = "objective"
INTERRUPTED_TAG = "interrupted"
GIT_COMMIT_TAGS = ("mlflow.source.git.commit", "git_commit")  #: MLflow's own first
EXPERIMENT_KIND_TAG = "diffexp.kind"  #: on a study's experiment: "sweep"
SWEEP_PARAM_PREFIX = "sweep."  #: the study's params of a trial, beside the flattened config
#: how an Optuna trial state closes its MLflow run
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

# -- Optuna trial and study attributes -----------------------------------------------------
ATTR_PREFIX = "diffexp:"


def attr(name: str) -> str:
    """The Optuna user attribute of ``name`` (``diffexp:<name>``)."""
    return ATTR_PREFIX + name


KEY_ATTR = attr("trial_key")
IGNORED_ATTR = attr("ignored")  #: "duplicate of trial N" / "over budget": not part of the study
FINGERPRINT_ATTR = attr("fingerprint")
HEARTBEAT_ATTR = attr("heartbeat")  #: journal storage: unix time of the last heartbeat
ERROR_ATTR = attr("error")
CONFIG_HASH_ATTR = attr(CONFIG_HASH_TAG)
MLFLOW_RUN_ID_ATTR = attr("mlflow_run_id")
RUN_DIR_ATTR = attr(RUN_DIR_TAG)
WORKER_ATTR = attr(WORKER_TAG)
REUSED_RESULT_ATTR = attr("reused_result")
RESUMED_FROM_ATTR = attr("resumed_from")
STUDY_KIND_ATTR = attr("kind")
STUDY_FILE_ATTR = attr("study_file")
