"""The sweep harness: studies from YAML, run by Optuna workers, tracked in MLflow.

* :mod:`.study`: the study-file schema (grid or search) and trial expansion;
* :mod:`.storage`: Optuna storage URLs (SQLite default, any SQLAlchemy URL, ``journal:<file>``);
* :mod:`.worker`: workers that claim trials, heartbeats and retries (exactly-once grid cells);
* :mod:`.tracking`: one MLflow experiment per study, one run per trial;
* :mod:`.progress`: done / running / failed / remaining;
* :mod:`.cli`: ``diffexp sweep`` (:func:`add_sweep_command`).
"""

from benchmark.harness.storage import StorageError, parse_storage_url
from benchmark.harness.study import Study, StudyError, load_study, study_from_dict

__all__ = ["Study", "StudyError", "StorageError", "add_sweep_command", "load_study", "parse_storage_url", "study_from_dict"]


def __getattr__(name):  # lazy, so `python -m benchmark.harness.cli` does not import itself twice
    if name == "add_sweep_command":
        from benchmark.harness.cli import add_sweep_command

        return add_sweep_command
    raise AttributeError(name)
