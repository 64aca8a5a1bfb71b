"""AlignProp (Prabhudesai et al., 2023) as a Lightning module, with pluggable exploration; its config.

Samples are drawn *with gradients* through the last K denoising steps (truncated backprop),
decoded by the VAE and scored by a differentiable reward on the original prompt; the loss is
``-reward_coefficient * mean(reward)``. K is fixed (K = 1 is AlignProp's variant), or drawn
uniformly once per sampling call for the whole batch, or once per sample per sampling call
(never redrawn at every step, a flaw of earlier implementations). Gradient checkpointing of the
UNet on the steps that carry gradient is on by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from diffexp.algorithms.base import RewardFinetuningModule
from diffexp.algorithms.config import AlgorithmConfig, SampleConfig, StrictConfig, TrainConfig
from diffexp.algorithms.losses import reward_loss
from diffexp.algorithms.registry import register_algorithm
from diffexp.exploration import ExplorationConfig
from diffexp.sampling.trajectory import Trajectory


class TruncationConfig(StrictConfig):
    mode: Literal["fixed", "uniform", "per_sample"] = Field(
        "fixed",
        description="fixed: K = k; uniform: one K ~ U[k_min, k_max] per sampling call; per_sample: one K per "
        "sample per call",
    )
    k: int = Field(1, ge=1, description="steps that carry gradient in fixed mode (AlignProp's K = 1)")
    k_min: int = Field(1, ge=1, description="smallest K in the random modes")
    k_max: int = Field(5, ge=1, description="largest K in the random modes")

    @model_validator(mode="after")
    def _range(self):
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        return self


class AlignPropTrainConfig(TrainConfig):
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (AlignProp: 1e-3)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="sampling batches accumulated per optimiser step")
    reward_coefficient: float = Field(1.0, gt=0, description="loss = -reward_coefficient * mean(reward)")
    truncation: TruncationConfig = Field(default_factory=TruncationConfig)
    gradient_checkpointing: bool = Field(
        True, description="recompute UNet activations in backward on the steps with gradient"
    )


class AlignPropConfig(AlgorithmConfig):
    """An AlignProp run. Per epoch: sample.num_batches_per_epoch batches of sample.batch_size
    samples per device, each one backward pass; an optimiser step every
    train.gradient_accumulation_steps batches (num_batches_per_epoch must be a multiple)."""

    algorithm: Literal["alignprop"] = "alignprop"
    sample: SampleConfig = Field(
        default_factory=lambda: SampleConfig(num_steps=50, eta=1.0, batch_size=4, num_batches_per_epoch=2)
    )
    exploration: ExplorationConfig = Field(default_factory=lambda: ExplorationConfig(guidance_scale=7.5))
    train: AlignPropTrainConfig = Field(default_factory=AlignPropTrainConfig)

    @model_validator(mode="after")
    def _arithmetic(self):
        if self.sample.num_batches_per_epoch % self.train.gradient_accumulation_steps:
            raise ValueError(
                f"sample.num_batches_per_epoch ({self.sample.num_batches_per_epoch}) must be a multiple of "
                f"train.gradient_accumulation_steps ({self.train.gradient_accumulation_steps})"
            )
        k_needed = self.train.truncation.k if self.train.truncation.mode == "fixed" else self.train.truncation.k_max
        if k_needed > self.sample.num_steps:
            raise ValueError(f"train.truncation: K up to {k_needed} exceeds sample.num_steps ({self.sample.num_steps})")
        return self

    def batch_arithmetic(self) -> dict[str, int]:
        return {
            **super().batch_arithmetic(),
            "optimizer_steps_per_epoch": self.sample.num_batches_per_epoch // self.train.gradient_accumulation_steps,
        }


def truncation_mask(
    config: TruncationConfig, batch: int, num_steps: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(batch, num_steps) bool: True on the last K_b steps of sample b, drawn once for this call."""
    if config.mode == "fixed":
        k = torch.full((batch,), config.k)
    elif config.mode == "uniform":
        k = torch.randint(config.k_min, config.k_max + 1, (1,), generator=generator).expand(batch)
    else:
        k = torch.randint(config.k_min, config.k_max + 1, (batch,), generator=generator)
    steps = torch.arange(num_steps).unsqueeze(0)
    return steps >= (num_steps - k.clamp(max=num_steps)).unsqueeze(1)


def differentiable_rewards() -> list[str]:
    from diffexp.rewards import REWARDS, reward_names

    return sorted(name for name in reward_names() if getattr(REWARDS[name], "differentiable", False))


@dataclass
class GradientBatch:
    """One sampling batch of an AlignProp epoch: its trajectory (images carry gradient through
    the last K steps) and the steps that carried it."""

    traj: Trajectory
    grad_steps: torch.Tensor

    @property
    def prompts(self) -> list[str]:
        return self.traj.prompts

    @property
    def images(self) -> torch.Tensor:
        return self.traj.images


@register_algorithm("alignprop", AlignPropConfig, label="AlignProp", order=2)
class AlignProp(RewardFinetuningModule):
    """Each sampling batch is one round of the template: sample with gradients, reward, backward;
    an optimiser step every ``train.gradient_accumulation_steps`` rounds."""

    ALGORITHM_METRICS = ("loss", "truncation_k_mean", "grad_norm")

    def __init__(self, config: AlignPropConfig):
        super().__init__(config)
        if not self.reward_fn.differentiable:
            raise ValueError(
                f"reward {config.reward.describe()!r} is not differentiable, so AlignProp cannot backpropagate "
                "through it; "
                f"differentiable rewards: {differentiable_rewards()} (use DDPO for non-differentiable rewards)"
            )

    @property
    def gradient_checkpointing(self) -> bool:
        return self.config.train.gradient_checkpointing

    def rounds_per_epoch(self) -> int:
        return self.config.sample.num_batches_per_epoch

    def round_context(self):
        return self.no_sync()  # gradients are averaged explicitly before each optimiser step

    def generate(self, round_index: int) -> GradientBatch:
        s, t = self.config.sample, self.config.train
        plan = self.strategy.plan(self.draw_prompts(s.batch_size), s.num_steps, self.streams.exploration)
        mask = truncation_mask(t.truncation, s.batch_size, s.num_steps, self.streams.prompts)  # common to arms
        latents = self.initial_noise(s.batch_size)
        return GradientBatch(self.sampler.sample(plan, self.streams.noise, grad_steps=mask, latents=latents), mask)

    def reward(self, batch: GradientBatch, round_index: int) -> torch.Tensor:
        return self.score(batch.images, batch.prompts, step=f"batch {round_index}")  # with gradient

    def update(self, batch: GradientBatch, rewards: torch.Tensor, advantages, round_index: int) -> dict[str, float]:
        t = self.config.train
        loss = reward_loss(rewards, t.reward_coefficient)
        self.check_finite(loss, f"batch {round_index}")
        self.manual_backward(loss / t.gradient_accumulation_steps)
        out = {"loss": loss.item(), "truncation_k_mean": batch.grad_steps.sum(1).float().mean().item()}
        if (round_index + 1) % t.gradient_accumulation_steps == 0:
            self.sync_gradients()
            out["grad_norm"] = self.clip_gradients(t.max_grad_norm)
            self.step_optimizer(f"batch {round_index}, optimiser step")
        return out
