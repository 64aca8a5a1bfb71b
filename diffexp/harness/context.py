"""A study as the harness runs it: its resolved paths and storages (``SweepContext``), the Optuna
study opened or set up (grid cells enqueued, stale cells refused) and one cell's run config."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from diffexp.algorithms.mlflow_run import Tracker, check_tracking_uri, tracking_uri_for
from diffexp.algorithms.run_identity import describe
from diffexp.algorithms.run_record import (
    CONFIG_HASH_ATTR,
    FINGERPRINT_ATTR,
    RUN_DIR_ATTR,
    STUDY_FILE_ATTR,
    STUDY_KIND_ATTR,
)
from diffexp.harness.progress import (
    KEY_ATTR,
    group_trials,
    key_state,
)
from diffexp.harness.storage import StorageSpec, open_storage, parse_storage_url, retry_callback_class
from diffexp.harness.study import StudyPlan, load_study


@dataclass
class SweepContext:
    """A study file resolved against the command line: where everything goes."""

    study: StudyPlan
    run_dir: Path
    storage: StorageSpec
    tracking_uri: str

    @property
    def total(self) -> int:
        return len(self.study.cells()) if self.study.kind == "grid" else self.study.spec.search.n_trials

    def keys(self) -> list[str] | None:
        return [c.key for c in self.study.cells()] if self.study.kind == "grid" else None


def resolve_context(
    study_path: str | Path | StudyPlan,
    run_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    create: bool = True,
    profile: str | None = None,
) -> SweepContext:
    study = study_path if isinstance(study_path, StudyPlan) else load_study(study_path, profile)
    if tracking_uri or study.spec.tracking_uri:  # the flag's, else the study file's
        check_tracking_uri(
            tracking_uri or study.spec.tracking_uri, "--tracking-uri" if tracking_uri else "tracking_uri"
        )
    run_dir = Path(run_dir or study.spec.run_dir or Path("runs") / "sweeps" / study.name).resolve()
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    spec = parse_storage_url(storage or study.spec.storage, run_dir, create_dirs=create)
    return SweepContext(study, run_dir, spec, tracking_uri_for(tracking_uri or study.spec.tracking_uri, run_dir))


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*RetryFailedTrialCallback.*")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def open_study(ctx: SweepContext):
    """The Optuna study (created if missing) with its sampler, pruner and retry callback.

    Returns (study, raw storage, retry callback)."""
    import optuna

    quiet_optuna()
    spec = ctx.study.spec
    retry = retry_callback_class()(max_retry=spec.max_retry, inherit_intermediate_values=True)
    storage = open_storage(ctx.storage, spec.heartbeat_interval, spec.effective_grace_period, retry)
    if ctx.study.kind == "grid":
        sampler, pruner = optuna.samplers.GridSampler(ctx.study.grid_search_space(), seed=0), optuna.pruners.NopPruner()
    else:
        sampler, pruner = spec.search.build_sampler(), spec.search.pruner.build()
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=spec.objective.direction,
        load_if_exists=True,
    )
    return study, storage, retry


def setup_study(ctx: SweepContext, log=print):
    """Create the study (idempotent), queue the grid's cells that have no trial yet (and re-queue
    cells whose every try failed), and create the MLflow experiment. Safe to run from every
    launcher; see the module docstring for why a double enqueue is harmless."""
    ctx.study.check_objective()
    study, _, _ = open_study(ctx)
    fingerprint = ctx.study.fingerprint()
    old = study.user_attrs.get(FINGERPRINT_ATTR)
    if old is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        study.set_user_attr(STUDY_KIND_ATTR, ctx.study.kind)
        study.set_user_attr(STUDY_FILE_ATTR, str(ctx.study.path.resolve() if ctx.study.path else None))
        study.set_user_attr(RUN_DIR_ATTR, str(ctx.run_dir))
    elif old != fingerprint:
        log(
            f"note: study {ctx.study.name!r} in {ctx.storage.display} was created from a different version of "
            f"{ctx.study.source}; "
            + ("new cells are queued, old ones kept" if ctx.study.kind == "grid" else "the search space changed")
        )
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    queued = requeued = 0
    if ctx.study.kind == "grid":
        groups = group_trials(study.get_trials(deepcopy=False))
        refuse_stale_cells(ctx, groups)
        for cell in ctx.study.cells():
            trials = groups.get(cell.key)
            if trials and key_state(trials) != "failed":
                continue
            study.enqueue_trial(cell.params, user_attrs={KEY_ATTR: cell.key})
            if trials:
                requeued += 1
            else:
                queued += 1
    Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir).ensure_experiment()
    if queued or requeued:
        log(f"queued {queued} cell(s)" + (f", re-queued {requeued} failed cell(s)" if requeued else ""))
    return study


def trial_config(ctx: SweepContext, tspec, key: str):
    """The run config a trial trains with: the study's, plus where it writes and what it logs to."""
    run_fields = {
        "run.output_dir": str(ctx.run_dir / "trials"),
        "run.name": key,
        "run.mlflow_tracking_uri": ctx.tracking_uri,
        "run.mlflow_experiment": ctx.study.name,
    }
    config = ctx.study.build_config(tspec, run_fields)
    config.run.loggers = sorted(set(config.run.loggers) | {"mlflow", "csv"})
    return config


def refuse_stale_cells(ctx: SweepContext, groups: dict) -> None:
    """A finished cell whose run config now hashes differently (a base config, a default, or the
    shipped embedded weights changed since it ran) must not pass for a result of this one."""
    from optuna.trial import TrialState

    from diffexp.harness.study_file import StudyError

    stale = []
    for cell in ctx.study.cells():
        finished = [t for t in groups.get(cell.key, []) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        ran_with = {t.user_attrs.get(CONFIG_HASH_ATTR) for t in finished} - {None}
        if ran_with and describe(trial_config(ctx, cell, cell.key))["config_hash"] not in ran_with:
            stale.append(cell.key)
    if stale:
        raise StudyError(
            f"study {ctx.study.name!r} in {ctx.run_dir} has {len(stale)} finished cell(s) whose run config has changed "
            f"since they ran (e.g. {', '.join(stale[:3])}): a base config, a default or the shipped embedded weights "
            f"differ. Their results would be mixed with new ones. Start a fresh study: move {ctx.run_dir} aside "
            f"or pass --run-dir (and --storage, if you gave one) for a new location."
        )


def exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # the running trial is closed as failed and re-queued
