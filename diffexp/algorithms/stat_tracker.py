"""Per-prompt reward normalisation (ddpo-pytorch's ``PerPromptStatTracker``).

Advantages are rewards standardised with the mean/std of the *same prompt's* recent rewards
(a buffer of ``buffer_size``), which removes prompt difficulty from the signal. Until a prompt
has ``min_count`` rewards, the whole batch's statistics are used instead.

``scale="batch"`` keeps the per-prompt mean but divides every advantage by one pooled scale: the
std of the batch's rewards around their prompts' means. A prompt whose few samples happen to
score almost alike then keeps small advantages, instead of having its noise-level differences
stretched to +-1 (the argument of Dr. GRPO, Liu et al. 2025, against per-group std scaling).
"""

from __future__ import annotations

from collections import deque

import numpy as np

SCALES = ("prompt", "batch")


class PerPromptStatTracker:
    def __init__(self, buffer_size: int, min_count: int, scale: str = "prompt"):
        if min_count > buffer_size:
            raise ValueError(f"min_count ({min_count}) cannot exceed buffer_size ({buffer_size})")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.buffer_size, self.min_count, self.scale = buffer_size, min_count, scale
        self.stats: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards: np.ndarray) -> np.ndarray:
        """Add this batch's rewards, then return their advantages (same order)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if len(prompts) != len(rewards):
            raise ValueError(f"{len(prompts)} prompts but {len(rewards)} rewards")
        centred, scales = np.empty_like(rewards), np.empty_like(rewards)
        batch_mean, batch_std = rewards.mean(), rewards.std() + 1e-6
        for prompt in dict.fromkeys(prompts):
            mask = np.array([p == prompt for p in prompts])
            buffer = self.stats.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(rewards[mask].tolist())
            if len(buffer) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                mean, std = np.mean(buffer), np.std(buffer) + 1e-6
            centred[mask], scales[mask] = rewards[mask] - mean, std
        if self.scale == "batch":
            return centred / (np.sqrt(np.mean(centred**2)) + 1e-6)
        return centred / scales

    def state_dict(self) -> dict:
        return {
            "buffer_size": self.buffer_size,
            "min_count": self.min_count,
            "scale": self.scale,
            "stats": {k: list(v) for k, v in self.stats.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.buffer_size, self.min_count = state["buffer_size"], state["min_count"]
        self.scale = state.get("scale", "prompt")  # checkpoints written before the option existed
        self.stats = {k: deque(v, maxlen=self.buffer_size) for k, v in state["stats"].items()}


def batch_advantages(rewards: np.ndarray) -> np.ndarray:
    """Global normalisation (per_prompt = False), as ddpo-pytorch and TRL: ``(r - mean) / (std + 1e-8)``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-8)
