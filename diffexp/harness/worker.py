"""Workers: claim a study's trials from the shared Optuna storage and train them.

How every grid cell runs exactly once, with any number of workers on any number of machines
------------------------------------------------------------------------------------------------
GridSampler alone assigns cells at ``ask()`` time and can hand the same cell to two concurrent
workers. The harness never lets the sampler choose a cell:

1. **Enqueue.** Setting up a grid study enqueues each cell as a fixed WAITING trial carrying its
   key (user attr ``diffexp:trial_key``), skipping cells that already have a trial; a re-launch
   re-queues cells whose every try failed. (Two launchers enqueueing at the same instant can
   queue a cell twice; step 3 makes that harmless.)
2. **Claim.** A worker only takes WAITING trials, through the storage's atomic
   WAITING -> RUNNING transition (a locked row update in RDB storages, under a file lock for
   SQLite, see ``storage.py``; the first log record in journal storage): of two workers racing
   for one trial, exactly one wins. Grid workers never call ``ask()`` for a new trial, so no cell
   is created outside the queue.
3. **One live trial per key.** A worker claims a key's trial only if it is the lowest-numbered
   unfinished trial of that key and the key is not done, and checks again after claiming:
   if the key is done, or another trial of it with a lower number is running, the claimed trial
   is closed as a duplicate (state FAIL, system attr ``diffexp:ignored``) without running.
4. **Dead workers.** A running trial records a heartbeat every ``heartbeat_interval`` seconds
   (Optuna's RDB heartbeat; for journal storage, a trial system attr). Workers that look for
   work first fail trials silent for longer than ``grace_period`` and Optuna's
   ``RetryHeartbeatStaleTrialCallback`` (``RetryFailedTrialCallback`` before Optuna 4.9)
   enqueues a copy with the same params and key, which resumes from the key's own
   ``checkpoints/last.ckpt``. Idle workers keep polling while trials are running, so the last
   live worker picks up a dead one's cell. A worker whose own trial was declared dead (it was
   only slow) stops that trial at the next batch.

So each key ends with exactly one COMPLETE (or PRUNED) trial; failed tries stay in the storage
as history. Finished trials are never touched again: their checkpoints, ``result.json`` and
MLflow runs stay, and a retried trial that finds ``result.json`` completes without retraining.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from diffexp.algorithms import run_record as rec
from diffexp.algorithms.checkpointing import checkpoint_usable_or_set_aside
from diffexp.algorithms.mlflow_run import Tracker
from diffexp.algorithms.run_identity import describe
from diffexp.algorithms.run_record import HEARTBEAT_ATTR, IGNORED_ATTR, KEY_ATTR
from diffexp.harness.callbacks import epoch_metrics, trial_callback
from diffexp.harness.context import SweepContext, exit_on_sigterm, open_study, resolve_context, trial_config
from diffexp.harness.heartbeat import Heartbeat, TrialLost
from diffexp.harness.progress import Progress, group_trials, study_progress, trial_key_of
from diffexp.harness.run_log import console as _console
from diffexp.harness.run_log import trial_output


class Worker:
    """Runs trials of one study until none is left."""

    def __init__(
        self,
        ctx: SweepContext,
        name: str | None = None,
        wait_for_running: bool = True,
        out=None,
        capture: bool = True,
    ):
        self.ctx = ctx
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.wait_for_running = wait_for_running
        self.capture = capture  # each trial's output into its train.log (run_log.py)
        self.out = out or (_console() if capture else sys.stdout)
        self.study, self.raw_storage, self.retry = open_study(ctx)
        self.tracker = Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir)
        spec = ctx.study.spec
        # an idle worker waits for the running trials (one may die and need a retry): it looks often,
        # since the sweep ends only when it notices that the last one finished
        self.poll = max(1.0, min(float(spec.heartbeat_interval), 2.0))
        self.journal = ctx.storage.kind == "journal"

    # -- output -----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """A line on the console."""
        print(f"[sweep {self.ctx.study.name} {self.name}] {message}", file=self.out, flush=True)

    def note(self, message: str) -> None:
        """A line in the running trial's log (the console when output is not captured)."""
        print(f"[sweep {self.ctx.study.name} {self.name}] {message}", flush=True)

    def progress(self) -> Progress:
        return study_progress(self.study, self.ctx.total, self.ctx.keys())

    # -- claiming ---------------------------------------------------------------------------
    @property
    def storage(self):
        return self.study._storage

    def _trials(self):
        return self.storage.get_all_trials(self.study._study_id, deepcopy=False)

    def _close_ignored(self, trial_id: int, reason: str) -> None:
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_system_attr(trial_id, IGNORED_ATTR, reason)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 - already finished by someone else
            pass

    def _duplicate_reason(self, trial_id: int, number: int, key: str) -> str | None:
        """Why a trial we now hold must not run (its key is done or a lower trial runs it)."""
        from optuna.trial import TrialState

        for other in group_trials(self._trials()).get(key, []):
            if other._trial_id == trial_id:
                continue
            if other.state in (TrialState.COMPLETE, TrialState.PRUNED):
                return f"duplicate: {key} already finished by trial #{other.number}"
            if other.state == TrialState.RUNNING and other.number < number:
                return f"duplicate: {key} is being run by trial #{other.number}"
        return None

    def claim_waiting(self):
        """Claim the next WAITING trial that may run (see the module docstring), or None."""
        import optuna
        from optuna.trial import TrialState

        trials = self._trials()
        groups = group_trials(trials)
        for t in sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number):
            key = trial_key_of(t)
            group = groups.get(key, [t])
            done = any(x.state in (TrialState.COMPLETE, TrialState.PRUNED) for x in group)
            unfinished = [x.number for x in group if x.state in (TrialState.WAITING, TrialState.RUNNING)]
            if not done and unfinished and min(unfinished) != t.number:
                continue  # a lower trial of this key goes first
            try:
                claimed = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                claimed = False
            if not claimed:
                continue
            reason = self._duplicate_reason(t._trial_id, t.number, key)
            if reason:
                self._close_ignored(t._trial_id, reason)
                self.log(f"trial #{t.number} closed: {reason}")
                continue
            return optuna.trial.Trial(self.study, t._trial_id)
        return None

    def ask_new(self):
        """Searches: a new trial from the sampler while the budget lasts, else None."""
        if self.ctx.study.kind != "search":
            return None
        n_trials = self.ctx.study.spec.search.n_trials
        originals = [
            t for t in self._trials() if "failed_trial" not in t.system_attrs and not t.system_attrs.get(IGNORED_ATTR)
        ]
        if len(originals) >= n_trials:
            return None
        trial = self.study.ask()
        frozen = self.storage.get_trial(trial._trial_id)
        if "failed_trial" not in frozen.system_attrs:
            rank = sum(
                1
                for t in self._trials()
                if t.number < trial.number
                and "failed_trial" not in t.system_attrs
                and not t.system_attrs.get(IGNORED_ATTR)
            )
            if rank >= n_trials:  # other workers took the last slots meanwhile
                self._close_ignored(trial._trial_id, "over the search budget")
                return None
        reason = self._duplicate_reason(trial._trial_id, trial.number, trial_key_of(frozen))
        if reason:  # ask() popped a queued retry whose key is already taken care of
            self._close_ignored(trial._trial_id, reason)
            return None
        if not frozen.user_attrs.get(KEY_ATTR):
            trial.set_user_attr(KEY_ATTR, trial_key_of(frozen))
        return trial

    def pending(self) -> bool:
        from optuna.trial import TrialState

        return any(
            t.state in (TrialState.RUNNING, TrialState.WAITING) and not t.system_attrs.get(IGNORED_ATTR)
            for t in self._trials()
        )

    # -- dead workers -------------------------------------------------------------------------
    def reap_stale(self) -> None:
        """Fail trials whose heartbeat stopped and queue their retries."""
        import copy

        import optuna
        from optuna.trial import TrialState

        grace = self.ctx.study.spec.effective_grace_period
        if not self.journal:
            running = [t for t in self._trials() if t.state == TrialState.RUNNING]
            if not running:
                return
            optuna.storages.fail_stale_trials(self.study)  # runs the retry callback on each trial it fails
            for t in running:
                after = self.storage.get_trial(t._trial_id)
                if after.state == TrialState.FAIL and rec.ERROR_ATTR not in after.user_attrs:
                    self.log(
                        f"trial #{t.number} {trial_key_of(t)}: no heartbeat for {grace}s, its worker is presumed "
                        "dead; re-queued"
                    )
            return
        now = time.time()
        for t in self._trials():
            if t.state != TrialState.RUNNING:
                continue
            last = max(
                float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)),
                t.datetime_start.timestamp() if t.datetime_start else 0.0,
            )
            if now - last <= grace:
                continue
            try:
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            self.retry(self.study, copy.deepcopy(self.storage.get_trial(t._trial_id)))
            self.log(
                f"trial #{t.number} {trial_key_of(t)}: no heartbeat for {grace}s, its worker is presumed dead; "
                "re-queued"
            )

    # -- the loop -----------------------------------------------------------------------------
    def run(self, max_trials: int | None = None) -> int:
        """Run trials until the study has none left (waiting for running ones, which may die and be
        retried, unless ``wait_for_running`` is off). Returns how many trials this worker ran."""
        ran = 0
        while max_trials is None or ran < max_trials:
            self.reap_stale()
            trial = self.claim_waiting() or self.ask_new()
            if trial is None:
                if self.wait_for_running and self.pending():
                    time.sleep(self.poll)
                    continue
                break
            self.run_trial(trial)
            ran += 1
        return ran

    def run_trial(self, trial) -> str:
        """Train one claimed trial; returns its final state name."""
        import optuna
        from optuna.trial import TrialState

        started = time.time()
        frozen = self.storage.get_trial(trial._trial_id)
        key = trial_key_of(frozen)
        study_def, spec = self.ctx.study, self.ctx.study.spec
        heartbeat = Heartbeat(self.raw_storage, trial._trial_id, spec.heartbeat_interval, self.journal)
        run_id = None
        with heartbeat:
            try:
                if study_def.kind == "grid":
                    params = {
                        axis: trial.suggest_categorical(axis, values)
                        for axis, values in study_def.grid_search_space().items()
                    }
                else:
                    params = study_def.suggest(trial)
                tspec = study_def.resolve(params, key=key)
                trial_dir = self.ctx.run_dir / "trials" / key
                config = trial_config(self.ctx, tspec, key)
                info = describe(config)
                tags = {
                    **info,
                    rec.CHECKPOINT_DIR_TAG: str(trial_dir / rec.CHECKPOINT_DIR),
                    rec.RUN_DIR_TAG: str(trial_dir),
                    rec.OPTUNA_STUDY_TAG: study_def.name,
                    rec.OPTUNA_TRIAL_NUMBER_TAG: str(trial.number),
                    rec.OPTUNA_STORAGE_TAG: self.ctx.storage.display,
                    rec.WORKER_TAG: self.name,
                }
                run_id = self.tracker.start_trial(key, tags, params, config)
                config.run.mlflow_run_id = run_id
                attrs = {
                    **info,
                    "mlflow_run_id": run_id,
                    rec.RUN_DIR_TAG: str(trial_dir),
                    rec.WORKER_TAG: self.name,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
                for name, value in attrs.items():
                    trial.set_user_attr(rec.attr(name), value)
                retry_of = frozen.system_attrs.get("failed_trial")
                with trial_output(trial_dir / rec.TRAIN_LOG_NAME, enabled=self.capture):
                    self.note(
                        f"trial #{trial.number} {key}: start ({tspec.label()})"
                        + (f", retry of #{retry_of}" if retry_of is not None else "")
                    )
                    value = self._train(trial, key, config, trial_dir, heartbeat, info["config_hash"])
            except optuna.TrialPruned as err:
                return self._finish(trial, key, run_id, TrialState.PRUNED, None, started, str(err))
            except TrialLost as err:
                self.log(f"trial #{trial.number} {key}: stopped: {err}")
                return "LOST"
            except (KeyboardInterrupt, SystemExit) as err:
                self._interrupted(trial, key, run_id, f"interrupted ({type(err).__name__})")
                raise
            except BaseException as err:  # noqa: BLE001 - a trial's failure must not kill the worker
                if type(err).__name__ == "SIGTERMException":
                    self._interrupted(trial, key, run_id, "interrupted (SIGTERM)")
                    raise
                trial.set_user_attr(
                    rec.ERROR_ATTR, "".join(traceback.format_exception_only(type(err), err)).strip()[-2000:]
                )
                log_file = self.ctx.run_dir / "trials" / key / rec.TRAIN_LOG_NAME
                where = f" (traceback in {log_file})" if self.capture else ""
                self.log(f"trial #{trial.number} {key}: FAILED: {type(err).__name__}: {err}{where}")
                if self.capture:
                    log_file.parent.mkdir(parents=True, exist_ok=True)
                    with open(log_file, "a") as f:
                        traceback.print_exc(file=f)
                else:
                    traceback.print_exc(file=self.out)
                return self._finish(trial, key, run_id, TrialState.FAIL, None, started, str(err))
        return self._finish(trial, key, run_id, TrialState.COMPLETE, value, started)

    def _train(self, trial, key: str, config, trial_dir: Path, heartbeat: Heartbeat, config_hash: str) -> float:
        from diffexp.algorithms.runner import run

        spec = self.ctx.study.spec
        result_file = trial_dir / rec.RESULT_NAME
        if result_file.exists():
            result = json.loads(result_file.read_text())
            if result.get("config_hash") == config_hash:
                self.note(f"trial #{trial.number} {key}: finished earlier (result.json), not retrained")
                trial.set_user_attr(rec.REUSED_RESULT_ATTR, str(result_file))
                return float(result["value"])
        last = rec.last_checkpoint(trial_dir)
        if last.exists() and checkpoint_usable_or_set_aside(last):
            trial.set_user_attr(rec.RESUMED_FROM_ATTR, str(last))
            self.note(f"trial #{trial.number} {key}: resuming from {last}")
        prune = self.ctx.study.kind == "search" and spec.search.pruner.kind != "none"
        # a worker declared dead while alive stops at its next step and frees the trial's directory
        module = run(
            config,
            resume=True,
            extra_callbacks=[trial_callback(self, trial, key, heartbeat, prune)],
            lock_timeout=max(600.0, 3.0 * spec.effective_grace_period),
        )
        if heartbeat.lost:
            raise TrialLost(f"trial #{trial.number} was declared dead by another worker")
        metrics = epoch_metrics(module.trainer)
        if spec.objective.metric not in metrics and config.run.mlflow_run_id:
            metrics = {**self.tracker.latest_metrics(config.run.mlflow_run_id), **metrics}
        if spec.objective.metric not in metrics:
            raise KeyError(f"objective metric {spec.objective.metric!r} was not logged; logged: {sorted(metrics)}")
        value = float(metrics[spec.objective.metric])
        result_file.write_text(
            json.dumps(
                {
                    "value": value,
                    "metrics": metrics,
                    "config_hash": config_hash,
                    "trial_number": trial.number,
                    "key": key,
                },
                indent=1,
            )
        )
        return value

    def _finish(
        self, trial, key: str, run_id: str | None, state, value: float | None, started: float, note: str = ""
    ) -> str:
        import optuna

        try:
            if state.name == "COMPLETE":
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as err:
            self.log(f"trial #{trial.number} {key}: could not record {state.name}: {err}")
            return "LOST"
        if run_id:
            try:
                self.tracker.finish_trial(run_id, state.name, value)
            except Exception as err:  # noqa: BLE001 - tracking must not lose the Optuna result
                self.log(f"trial #{trial.number} {key}: MLflow update failed: {err}")
        shown = f" value {value:.6g}" if value is not None else ""
        extra = f" ({note})" if note and state.name != "COMPLETE" else ""
        self.log(
            f"trial #{trial.number} {key}: {state.name}{shown} in {time.time() - started:.0f}s{extra} | study: "
            f"{self.progress().line()}"
        )
        return state.name

    def _interrupted(self, trial, key: str, run_id: str | None, note: str) -> None:
        """Ctrl-C / SIGTERM: close the trial as failed and queue its retry (it resumes later)."""
        import copy

        from optuna.trial import TrialState

        try:
            self.study.tell(trial, state=TrialState.FAIL)
            self.retry(self.study, copy.deepcopy(self.storage.get_trial(trial._trial_id)))
            if run_id:
                self.tracker.finish_trial(run_id, "FAIL", None, {rec.INTERRUPTED_TAG: note})
        except Exception:  # noqa: BLE001 - the trial was closed by another worker meanwhile
            pass
        self.log(f"trial #{trial.number} {key}: {note}; re-queued")


def main(argv: list[str] | None = None) -> int:
    """One worker process: ``python -m diffexp.harness.worker STUDY.yaml --storage URL ...``
    (what ``diffexp sweep --workers N`` starts; set-up is the launcher's job)."""
    p = argparse.ArgumentParser(prog="python -m diffexp.harness.worker", description=main.__doc__)
    p.add_argument("study", type=Path)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--storage")
    p.add_argument("--tracking-uri")
    p.add_argument("--name", help="worker name in the log (default host:pid)")
    p.add_argument("--profile", help="the study file's profile (default: the file as written)")
    p.add_argument("--no-wait", action="store_true", help="exit when no trial is waiting, even if others still run")
    p.add_argument("--verbose", action="store_true", help="the trainings' own output on the console, not in train.log")
    args = p.parse_args(argv)
    ctx = resolve_context(args.study, args.run_dir, args.storage, args.tracking_uri, profile=args.profile)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    Worker(ctx, name=args.name, wait_for_running=not args.no_wait, capture=not args.verbose).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
