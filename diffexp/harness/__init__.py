"""The sweep harness: studies from YAML, run by Optuna workers, tracked in MLflow.

* :mod:`.study_file`: the study-file schema (grid or search) and its profiles;
* :mod:`.study`: the plan of trials (grid cells or search suggestions) and their run configs;
* :mod:`.run_identity`: what a run is (dotted keys, cell key, config hash, tags);
* :mod:`.storage`: Optuna storage URLs (SQLite default, any SQLAlchemy URL, ``journal:<file>``);
* :mod:`.context`: a study's resolved paths and storages, its set-up (grid cells enqueued);
* :mod:`.worker`: workers that claim trials and retries (exactly-once grid cells), with
  :mod:`.heartbeat` and the trial's Lightning callback (:mod:`.callbacks`);
* :mod:`.launch`: starting a study's worker processes and reporting its state;
* :mod:`.tracking`: one MLflow experiment per study, one run per trial;
* :mod:`.progress`: done / running / failed / remaining;
* :mod:`.cli`: ``diffexp sweep`` (:func:`add_sweep_command`).

Names are imported lazily so that ``diffexp --help`` stays instant.
"""

_EXPORTS = {
    "add_sweep_command": "diffexp.harness.cli",
    "StudyPlan": "diffexp.harness.study",
    "StudyError": "diffexp.harness.study_file",
    "load_study": "diffexp.harness.study",
    "study_from_dict": "diffexp.harness.study",
    "StorageError": "diffexp.harness.storage",
    "parse_storage_url": "diffexp.harness.storage",
    "run_sweep": "diffexp.harness.launch",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
