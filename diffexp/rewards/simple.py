"""Tiny analytic rewards: sanity checks and tests (no weights)."""

from __future__ import annotations

import torch

from diffexp.rewards.base import Reward, register_reward


@register_reward("brightness")
class Brightness(Reward):
    """Mean pixel value in [0, 1]; differentiable. Any working optimiser makes images brighter."""

    name = "brightness"
    differentiable = True

    def score(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return images.float().mean(dim=(1, 2, 3))
