"""Atomic end-of-epoch checkpoints: ``last.ckpt`` is replaced only by a complete file.

The checkpoint is written next to its destination and renamed over it (``os.replace`` is atomic),
so a crash or SIGKILL in the middle of a write leaves the previous good checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class AtomicLastCheckpoint(L.Callback):
    def __init__(self, directory: str | Path, every_n_epochs: int = 1):
        self.path = Path(directory) / "last.ckpt"
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank must call it (collective); rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
