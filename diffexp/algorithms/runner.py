"""Build a Lightning Trainer for a run config and run it (resuming from the last checkpoint).

The run directory is locked and its config checked before anything in it changes
(``run_directory``); the MLflow run is resumed by id (``mlflow_run``); SIGTERM and Ctrl-C stop
at the next step (``stopping``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

from diffexp.algorithms import sharding
from diffexp.algorithms.checkpointing import AtomicLastCheckpoint, read_checkpoint
from diffexp.algorithms.csv_logging import ResumableCSVLogger
from diffexp.algorithms.mlflow_run import RunMLFlowLogger, build_mlflow_logger, default_tracking_uri
from diffexp.algorithms.run_directory import RunDirectory, RunDirectoryError, run_path
from diffexp.algorithms.run_record import CHECKPOINT_DIR, CONFIG_NAME, MLFLOW_RUN_NAME, last_checkpoint
from diffexp.algorithms.stopping import stop_on_signals

__all__ = ["RunMLFlowLogger", "build_module", "default_tracking_uri", "run"]


def build_module(config):
    """The registered algorithm's Lightning module for ``config``."""
    from diffexp.algorithms.registry import get_algorithm

    return get_algorithm(config.algorithm).module_class(config)


def build_loggers(config, directory: RunDirectory, resumed: bool) -> list:
    loggers = []
    if "csv" in config.run.loggers:
        loggers.append(ResumableCSVLogger(save_dir=str(directory.path), name="", version="csv"))
    if "mlflow" in config.run.loggers:
        loggers.append(build_mlflow_logger(config, directory, resumed))
    return loggers


def print_batch_arithmetic(config) -> None:
    if hasattr(config, "batch_arithmetic_text"):
        print(config.batch_arithmetic_text())


def is_primary_process() -> bool:
    """False in the processes Lightning's DDP launcher starts for ranks > 0 (they re-run the script)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def configure_threads(config) -> None:
    """``run.threads``, or on CPU with several DDP processes an equal share of the cores each."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    elif config.run.devices > 1 and (config.run.accelerator == "cpu" or not torch.cuda.is_available()):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.run.devices))


def check_accelerator(config) -> None:
    if config.run.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RunDirectoryError(
            f"run.accelerator={config.run.accelerator} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); use run.accelerator=cpu, or auto to take a GPU when there is one"
        )


def stored_config(directory_path: Path, checkpoint: dict) -> dict | None:
    """The config a checkpoint was trained with (older checkpoints: the directory's ``config.yaml``)."""
    text = checkpoint["diffexp"].get("config")
    if text:
        return json.loads(text)
    record = directory_path / CONFIG_NAME
    return yaml.safe_load(record.read_text()) if record.is_file() else None


def say_what_is_left(path: Path, config, resuming: bool, resume: bool) -> None:
    """One line when a run directory holds what a start or resume will not continue."""
    metrics = path / "csv" / "metrics.csv"
    if resume and not resuming and (metrics.exists() or (path / MLFLOW_RUN_NAME).exists()):
        print(
            f"note: {path} holds the logs of an earlier attempt but no checkpoint (checkpoints/last.ckpt): starting "
            "over; its CSV rows are replaced and its MLflow run continues from 0 queries",
            file=sys.stderr,
        )
    if resuming and "csv" in config.run.loggers and not metrics.exists():
        print(f"note: resuming without {metrics} (missing): the CSV log restarts at the checkpoint", file=sys.stderr)


def run(config, resume: bool = True, extra_callbacks: list | None = None, lock_timeout: float = 0):
    """Train; returns the fitted module. Re-running with the same name resumes from ``last.ckpt``;
    ``resume=False`` starts the run over (its checkpoint is discarded). ``lock_timeout``: seconds to
    wait for another training that holds the run directory (default: refuse at once)."""
    check_accelerator(config)
    configure_threads(config)
    # cuDNN convolutions default to TF32; the replayed minibatches of DDPO then round differently.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = config.run.allow_tf32
    L.seed_everything(config.run.seed, workers=True, verbose=False)
    path = run_path(config)
    primary = is_primary_process()
    with RunDirectory.open(config, primary, lock_timeout) as directory:
        last = last_checkpoint(path)
        resuming = resume and last.exists()  # read under the lock: a holder before may just have written it
        if directory.primary:
            say_what_is_left(path, config, resuming, resume)
        if resume:  # a refused resume says so before any model loads
            directory.check_and_record(config, stored_config(path, read_checkpoint(last)) if resuming else None)
        module = build_module(config)
        if not resume:  # a restart deletes the old run only once the new one has been built
            directory.check_and_record(config, None)
            if directory.primary:  # nothing of the old run may be resumed later
                shutil.rmtree(path / CHECKPOINT_DIR, ignore_errors=True)
                directory.forget_mlflow_run()
        return _fit(config, module, directory, str(last) if resuming else None, extra_callbacks)


def _fit(config, module, directory: RunDirectory, ckpt_path: str | None, extra_callbacks: list | None):
    strategy = "auto"
    if config.run.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        accelerator = config.run.accelerator
        backend = "gloo" if accelerator == "cpu" or not torch.cuda.is_available() else "nccl"
        if config.run.strategy == "fsdp":  # FSDP2 over all devices; one file per checkpoint
            strategy = sharding.sharded_strategy(config.run.devices, backend)
        else:
            strategy = DDPStrategy(process_group_backend=backend, find_unused_parameters=False)
    checkpoints = AtomicLastCheckpoint(directory.path / CHECKPOINT_DIR, every_n_epochs=config.run.save_every)
    trainer = L.Trainer(
        max_epochs=config.run.num_epochs,
        accelerator=config.run.accelerator,
        devices=config.run.devices,
        strategy=strategy,
        precision=config.run.precision,
        logger=build_loggers(config, directory, resumed=ckpt_path is not None) or False,
        callbacks=[checkpoints, *(extra_callbacks or [])],
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # AtomicLastCheckpoint does it
        deterministic=config.run.deterministic,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(directory.path),
    )
    if trainer.is_global_zero:
        print_batch_arithmetic(config)
        if ckpt_path:
            print(f"resuming from {ckpt_path}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with stop_on_signals():
        trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    return module
