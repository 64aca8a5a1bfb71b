"""The reward interface: decoded images in [0, 1] and their original prompts -> one score per image.

Rewards are registered by name (``@register_reward("name")`` on a factory). A reward declares
whether it is differentiable with respect to the images (AlignProp needs that). Heavy models
load lazily on first use and stay cached on the instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from diffexp.registry import Registry
from diffexp.rewards.parts import parse_weights


class Reward(torch.nn.Module):
    """Base class. Subclasses implement :meth:`score` on a batch; ``__call__`` handles batching and no-grad."""

    #: Registry name; set by subclasses.
    name: str = "reward"
    #: Whether gradients flow from the score to the image pixels.
    differentiable: bool = False
    #: Largest batch passed to :meth:`score` at once.
    batch_size: int = 32

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Reward:
        """A scorer is never in training mode: a host module's ``.train()`` (Lightning, a user) would
        otherwise switch on dropout in lazily loaded heads (the aesthetic MLPs) and make scores random."""
        return super().train(False)

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{self.name}: {images.shape[0]} images but {len(prompts)} prompts")
        need_grad = self.differentiable and torch.is_grad_enabled() and images.requires_grad
        with torch.set_grad_enabled(need_grad):
            chunks = [
                self.score(images[i : i + self.batch_size], list(prompts[i : i + self.batch_size]))
                for i in range(0, images.shape[0], self.batch_size)
            ]
        return torch.cat(chunks).float()


class WeightedSum(Reward):
    """A weighted sum of rewards is itself a reward (differentiable if every part is)."""

    name = "weighted_sum"

    def __init__(self, parts: dict[str, tuple[Reward, float]]):
        super().__init__()
        if not parts:
            raise ValueError("a weighted sum needs at least one reward")
        self.parts = torch.nn.ModuleDict({k: r for k, (r, _) in parts.items()})
        self.weights = {k: float(w) for k, (_, w) in parts.items()}
        self.differentiable = all(r.differentiable for r in self.parts.values())
        self.batch_size = max(r.batch_size for r in self.parts.values())

    def score(self, images, prompts):
        return sum(self.weights[k] * r(images, prompts) for k, r in self.parts.items())


REWARDS: Registry[Callable[..., Reward]] = Registry("reward")


def register_reward(name: str, ground_truth: str | None = None, *, label: str | None = None):
    """Decorator registering a reward factory (a class or function returning a :class:`Reward`);
    ``ground_truth`` names the held-out metric that measures what the reward is a proxy for (the
    report flags a reward that rises while it does not); ``label`` is its name in report titles."""
    return REWARDS.register(name, label=label, ground_truth=ground_truth)


def ground_truth_metric(name: str) -> str | None:
    """The ground-truth metric a registered reward declared, if any."""
    return REWARDS.entry(name).extra["ground_truth"] if name in REWARDS else None


def reward_names() -> list[str]:
    """Every registered reward, plugins' included."""
    return REWARDS.names()


def build_reward(name: str, **kwargs) -> Reward:
    """A registered reward by name, built with ``kwargs``."""
    return REWARDS[name](**kwargs)


def build_weighted_sum(config: Mapping[str, float | Mapping[str, Any]]) -> WeightedSum:
    """A weighted sum from a config, e.g. ``{"aesthetic": 1.0, "pickscore": {"weight": 0.1, "model": "/w/ps"}}``
    (parsed by :func:`diffexp.rewards.parts.parse_weights`)."""
    return WeightedSum({p.part: (build_reward(p.reward, **p.options), p.weight) for p in parse_weights(config)})
