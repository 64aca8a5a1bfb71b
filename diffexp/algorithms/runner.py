"""Build a Lightning Trainer for a run config and run it (resuming from the last checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import MLFlowLogger

from diffexp.algorithms.checkpointing import AtomicLastCheckpoint, verify_checkpoint
from diffexp.algorithms.csv_logging import ResumableCSVLogger


def build_module(config):
    """The registered algorithm's Lightning module for ``config``."""
    from diffexp.algorithms.registry import get_algorithm

    return get_algorithm(config.algorithm).module_class(config)


def default_tracking_uri(output_dir: str | Path) -> str:
    """MLflow's SQLite store inside the output directory (the ``file:`` store is deprecated)."""
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, which a sweep worker can detach from a run it no longer owns:
    when the harness declares a worker dead and re-runs its trial into the same MLflow run, the
    old worker must neither log into that run nor mark it FAILED on its way out."""

    detached = False

    def detach(self) -> None:
        self.detached = True

    def log_metrics(self, metrics, step=None) -> None:
        if not self.detached:
            super().log_metrics(metrics, step)

    def log_hyperparams(self, params) -> None:
        if not self.detached:
            super().log_hyperparams(params)

    def finalize(self, status: str = "success") -> None:
        if not self.detached:
            super().finalize(status)


def build_loggers(config, run_dir: Path) -> list:
    loggers = []
    if "csv" in config.run.loggers:
        loggers.append(ResumableCSVLogger(save_dir=str(run_dir), name="", version="csv"))
    if "mlflow" in config.run.loggers:
        uri = config.run.mlflow_tracking_uri or default_tracking_uri(config.run.output_dir)
        tags = {"algorithm": config.algorithm, "strategy": config.exploration.strategy, **config.run.mlflow_tags}
        loggers.append(
            RunMLFlowLogger(
                experiment_name=config.run.mlflow_experiment or config.run.name,
                tracking_uri=uri,
                run_name=config.run.name,
                run_id=config.run.mlflow_run_id,
                tags=None if config.run.mlflow_run_id else tags,
            )
        )
    return loggers


def print_batch_arithmetic(config) -> None:
    if hasattr(config, "batch_arithmetic_text"):
        print(config.batch_arithmetic_text())


def run(config, resume: bool = True, extra_callbacks: list | None = None):
    """Train; returns the fitted module. Re-running with the same name resumes from ``last.ckpt``."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    # cuDNN convolutions default to TF32; the replayed minibatches of DDPO then round differently.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = config.run.allow_tf32
    L.seed_everything(config.run.seed, workers=True, verbose=False)
    run_dir = Path(config.run.output_dir) / config.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    module = build_module(config)
    if config.run.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        accelerator = config.run.accelerator
        backend = "gloo" if accelerator == "cpu" or not torch.cuda.is_available() else "nccl"
        strategy = DDPStrategy(process_group_backend=backend, find_unused_parameters=False)
    else:
        strategy = "auto"
    checkpoints = AtomicLastCheckpoint(run_dir / "checkpoints", every_n_epochs=config.run.save_every)
    trainer = L.Trainer(
        max_epochs=config.run.num_epochs,
        accelerator=config.run.accelerator,
        devices=config.run.devices,
        strategy=strategy,
        precision=config.run.precision,
        logger=build_loggers(config, run_dir) or False,
        callbacks=[checkpoints, *(extra_callbacks or [])],
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # AtomicLastCheckpoint does it
        deterministic=config.run.deterministic,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if ckpt_path:
        verify_checkpoint(ckpt_path)
    if trainer.is_global_zero:
        print_batch_arithmetic(config)
        if ckpt_path:
            print(f"resuming from {ckpt_path}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    return module
