"""Atomic end-of-epoch checkpoints: ``last.ckpt`` is replaced only by a complete file.

The checkpoint is written next to its destination and renamed over it (``os.replace`` is atomic),
so a crash or SIGKILL in the middle of a write leaves the previous good checkpoint intact.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L

from diffexp.algorithms.run_record import LAST_CHECKPOINT


class AtomicLastCheckpoint(L.Callback):
    def __init__(self, directory: str | Path, every_n_epochs: int = 1):
        self.path = Path(directory) / LAST_CHECKPOINT
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Every rank must call it (collective); rank 0 writes. weights_only=False here means "the full
        # training state" (optimiser, loops), not pickles: the file still loads with weights_only=True.
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
        except OSError as err:  # disk full, say: the last good checkpoint stays, the partial one goes
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"epoch {epoch}: could not write the checkpoint {self.path} ({err.strerror or err}); the previous "
                "checkpoint is intact, and re-running the command resumes from it once there is room"
            ) from err
        if trainer.is_global_zero:
            for logger in trainer.loggers:  # the epochs up to here are now durable: log them
                if hasattr(logger, "commit"):
                    logger.commit()


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a runtime fault: exit status 1)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents (tensors memory-mapped), refusing one that is truncated or holds
    pickled code, before Lightning reads it.

    Loading with ``weights_only=True`` never runs code from the file (a payload is an error here);
    ``mmap`` maps the tensors instead of reading them, so the check costs little before the real load.
    """
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot resume from {path}: not a safe, complete checkpoint ({first}). Move it away to start "
            "the run afresh, or point run.output_dir/run.name elsewhere."
        ) from None
    if not isinstance(state, dict) or "diffexp" not in state:
        raise CheckpointError(f"cannot resume from {path}: not a diffexp training checkpoint (no 'diffexp' state)")
    return state


def verify_checkpoint(path: str | Path) -> None:
    """:func:`read_checkpoint`, for its check only."""
    read_checkpoint(path)


def checkpoint_usable_or_set_aside(path: Path) -> bool:
    """Whether ``path`` loads; a checkpoint torn by a crash mid-write is renamed aside instead, so
    that it cannot stop the retry that would write a new one."""
    try:
        verify_checkpoint(path)
        return True
    except CheckpointError:
        path.rename(path.with_name(f"{path.name}.broken-{int(time.time())}"))
        return False
