"""Run `diffexp train` and SIGKILL the process at a chosen phase of a chosen epoch (test helper).

    python -m tests.algorithms.fault_injection CONFIG.yaml PHASE EPOCH

PHASE: sampling | reward | update (DDPO's generate/reward/update units), checkpoint (the kill
lands after the temporary checkpoint file is half written, before it replaces ``last.ckpt``) or
commit (after ``last.ckpt`` of epoch EPOCH is in place, before its metrics are sent to MLflow).
"""

import os
import signal
import sys
from pathlib import Path

from diffexp.algorithms.ddpo import DDPO

PHASE_METHODS = {"sampling": "generate", "reward": "reward", "update": "update"}


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(phase: str, epoch: int) -> None:
    if phase in PHASE_METHODS:
        name = PHASE_METHODS[phase]
        original = getattr(DDPO, name)

        def killer(self, *args, **kwargs):
            if self.current_epoch == epoch:
                _die()
            return original(self, *args, **kwargs)

        setattr(DDPO, name, killer)
    elif phase == "checkpoint":
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        original = TorchCheckpointIO.save_checkpoint

        def half_written(self, checkpoint, path, storage_options=None):
            original(self, checkpoint, path, storage_options)
            if checkpoint["epoch"] == epoch:
                size = Path(path).stat().st_size
                with open(path, "r+b") as f:
                    f.truncate(size // 2)
                _die()

        TorchCheckpointIO.save_checkpoint = half_written
    elif phase == "commit":
        from diffexp.algorithms.mlflow_run import RunMLFlowLogger

        original_commit = RunMLFlowLogger.commit
        calls = []

        def dies_before_sending(self):
            calls.append(1)
            if len(calls) == epoch:
                _die()
            return original_commit(self)

        RunMLFlowLogger.commit = dies_before_sending
    else:
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    config_path, phase, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arm(phase, epoch)
    from diffexp.cli import main

    sys.exit(main(["train", "--config", config_path]))
