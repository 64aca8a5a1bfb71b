"""What every training stage of the embedded world uses: per-step random generators, the
learning-rate schedule, token ids, and resumable stage checkpoints written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffexp.models.tokenizer import MODEL_MAX_LENGTH, clip_tokenizer

#: The stages that train the generator, in order (each continues from the previous one).
GENERATOR_STAGES = ("generator", "generator_finetune", "generator_refine", "generator_context")


def stage_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The generator of one step of one stage: resuming at any step draws what an unbroken run would."""
    return np.random.default_rng([seed, sum(stage.encode()), step])


def lr_schedule(total: int, warmup: int = 100):
    """Linear warm-up, then cosine decay to 5% over ``total`` steps (a LambdaLR factor)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))) * 0.95 + 0.05

    return f


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StageCheckpoint:
    """Model weights (safetensors) + optimiser/scheduler/step (torch, loaded with weights_only=True)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def done(self) -> bool:
        return (self.dir / "DONE").exists()

    def mark_done(self, info: dict) -> None:
        (self.dir / "DONE").write_text(json.dumps(info, indent=2))

    def save(
        self, step: int, modules: dict[str, torch.nn.Module], optimizer, lr_sched, extra: dict | None = None
    ) -> None:
        tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
        atomic_save_tensors(tensors, self.dir / "weights.safetensors")
        atomic_torch_save(
            {"step": step, "optimizer": optimizer.state_dict(), "lr": lr_sched.state_dict(), "extra": extra or {}},
            self.dir / "state.pt",
        )

    def load(self, modules: dict[str, torch.nn.Module], optimizer, lr_sched) -> tuple[int, dict]:
        if not (self.dir / "state.pt").exists():
            return 0, {}
        tensors = load_file(str(self.dir / "weights.safetensors"))
        for name, m in modules.items():
            prefix = name + "."
            m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        state = torch.load(self.dir / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr"])
        return int(state["step"]), state["extra"]


def token_ids(texts: list[str], length: int = MODEL_MAX_LENGTH) -> torch.Tensor:
    """Padded CLIP token ids of ``texts`` (the world's 12-token context by default)."""
    return clip_tokenizer()(
        texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids
