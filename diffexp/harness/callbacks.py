"""The Lightning callback a trial trains with: progress, Optuna's intermediate values and pruning,
and the heartbeat's verdict, after every epoch."""

from __future__ import annotations

from diffexp.harness.heartbeat import Heartbeat, TrialLost


def epoch_metrics(trainer) -> dict[str, float]:
    """The last epoch's metrics, as the module logged them (``trainer.callback_metrics``, which
    Lightning's and optuna-integration's callbacks read too); NaN marks one it did not measure."""
    values = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return {name: value for name, value in values.items() if value == value}


def trial_callback(worker, trial, key: str, heartbeat: Heartbeat, prune: bool):
    """A Lightning callback that, after every epoch, prints progress, reports the intermediate
    metric (step = reward queries) to the Optuna trial and prunes if the pruner says so; and
    stops the run if the trial was lost. (Built lazily: Lightning is imported only to train.)"""
    import lightning as L
    import optuna

    class TrialCallback(L.Callback):
        def on_exception(self, trainer, module, exception: BaseException) -> None:
            # Lightning marks its MLflow run FAILED next; if a retry of this trial owns that run
            # now (this worker was declared dead), leave the run to it.
            heartbeat.beat()
            if heartbeat.lost:
                for logger in trainer.loggers:
                    if hasattr(logger, "detach"):
                        logger.detach()

        def on_train_batch_end(self, *args, **kwargs) -> None:
            if heartbeat.lost:
                raise TrialLost(f"trial #{trial.number} was declared dead by another worker")

        def on_train_epoch_end(self, trainer, module) -> None:
            metrics = epoch_metrics(trainer)
            name = worker.ctx.study.spec.objective.intermediate
            value = metrics.get(name)
            step = int(metrics.get("reward_queries", module.reward_queries))
            shown = f"{name} {value:.4g}" if value is not None else f"{name} -"
            worker.note(
                f"trial #{trial.number} {key}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, "
                f"{step} reward queries, {shown}"
            )
            if heartbeat.lost:
                raise TrialLost(f"trial #{trial.number} was declared dead by another worker")
            if value is None or value != value:  # missing or NaN: nothing to report
                return
            trial.report(float(value), step)
            if prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {step} reward queries ({name} {value:.4g})")

    return TrialCallback()
