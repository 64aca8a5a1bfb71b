"""AlignProp (Prabhudesai et al., 2023) as a Lightning module, with pluggable exploration.

Samples are drawn *with gradients* through the last K denoising steps (truncated backprop),
decoded by the VAE and scored by a differentiable reward on the original prompt; the loss is
``-reward_coefficient * mean(reward)``. K is fixed (K = 1 is AlignProp's variant), or drawn
uniformly once per sampling call for the whole batch, or once per sample per sampling call
(never redrawn at every step, a flaw of earlier implementations). Gradient checkpointing of the
UNet on the steps that carry gradient is on by default.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from diffexp.algorithms.base import PhaseClock, RewardFinetuningModule
from diffexp.algorithms.config import ModelConfig, PromptConfig, RewardConfig, RunConfig, SampleConfig, _Strict
from diffexp.algorithms.losses import reward_loss
from diffexp.exploration import ExplorationConfig


class TruncationConfig(_Strict):
    mode: Literal["fixed", "uniform", "per_sample"] = Field(
        "fixed", description="fixed: K = k; uniform: one K ~ U[k_min, k_max] per sampling call; per_sample: one K per sample per call"
    )
    k: int = Field(1, ge=1, description="steps that carry gradient in fixed mode (AlignProp's K = 1)")
    k_min: int = Field(1, ge=1, description="smallest K in the random modes")
    k_max: int = Field(5, ge=1, description="largest K in the random modes")

    @model_validator(mode="after")
    def _range(self):
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        return self


class AlignPropTrainConfig(_Strict):
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (AlignProp: 1e-3)")
    lr_warmup_steps: int = Field(0, ge=0, description="optimiser steps of linear learning-rate warm-up (AlignProp: none)")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    gradient_accumulation_steps: int = Field(1, ge=1, description="sampling batches accumulated per optimiser step")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clipping")
    reward_coefficient: float = Field(1.0, gt=0, description="loss = -reward_coefficient * mean(reward)")
    truncation: TruncationConfig = Field(default_factory=TruncationConfig)
    gradient_checkpointing: bool = Field(True, description="recompute UNet activations in backward on the steps with gradient")


class AlignPropConfig(_Strict):
    """An AlignProp run. Per epoch: sample.num_batches_per_epoch batches of sample.batch_size
    samples per device, each one backward pass; an optimiser step every
    train.gradient_accumulation_steps batches (num_batches_per_epoch must be a multiple)."""

    algorithm: Literal["alignprop"] = "alignprop"
    model: ModelConfig = Field(default_factory=ModelConfig)
    sample: SampleConfig = Field(default_factory=lambda: SampleConfig(num_steps=50, eta=1.0, batch_size=4, num_batches_per_epoch=2))
    exploration: ExplorationConfig = Field(default_factory=lambda: ExplorationConfig(guidance_scale=7.5))
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=lambda: RewardConfig(name="embedded_aesthetic"))
    train: AlignPropTrainConfig = Field(default_factory=AlignPropTrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

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
            "samples_per_epoch": self.sample.batch_size * self.sample.num_batches_per_epoch * self.run.devices,
            "optimizer_steps_per_epoch": self.sample.num_batches_per_epoch // self.train.gradient_accumulation_steps,
        }


def truncation_mask(config: TruncationConfig, batch: int, num_steps: int, generator: torch.Generator | None) -> torch.Tensor:
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
    from diffexp.rewards import REWARDS

    return sorted(name for name, factory in REWARDS.items() if getattr(factory, "differentiable", False))


class AlignProp(RewardFinetuningModule):
    def __init__(self, config: AlignPropConfig):
        super().__init__(config)
        if not self.reward_fn.differentiable:
            raise ValueError(
                f"reward {config.reward.name!r} is not differentiable, so AlignProp cannot backpropagate through it; "
                f"differentiable rewards: {differentiable_rewards()} (use DDPO for non-differentiable rewards)"
            )

    def training_step(self, batch, batch_idx):
        s, t = self.config.sample, self.config.train
        rewards_all, prompts_all, k_used, grad_norms = [], [], [], []
        images_all = []
        clock = PhaseClock()
        for i in range(s.num_batches_per_epoch):
            plan = self.strategy.plan(self.draw_prompts(s.batch_size), s.num_steps, self.sample_generator)
            mask = truncation_mask(t.truncation, s.batch_size, s.num_steps, self.sample_generator)
            with self.no_sync():
                with clock("time_sampling"):
                    traj = self.sampler.sample(plan, self.sample_generator, grad_steps=mask)
                with clock("time_reward"):
                    rewards = self.score(traj.images, plan.prompts, step=f"batch {i}")
                loss = reward_loss(rewards, t.reward_coefficient)
                self.check_finite(loss, f"batch {i}")
                with clock("time_update"):
                    self.manual_backward(loss / t.gradient_accumulation_steps)
            if (i + 1) % t.gradient_accumulation_steps == 0:
                with clock("time_update"):
                    self.sync_gradients()
                    grad_norms.append(torch.nn.utils.clip_grad_norm_(self.trainable, t.max_grad_norm).item())
                    self.step_optimizer()
            rewards_all.append(rewards.detach())
            prompts_all += plan.prompts
            images_all.append(traj.images.detach())
            k_used.append(mask.sum(1).float().mean().item())
        rewards = torch.cat(rewards_all)
        metrics = self.reward_metrics(self.gather(rewards.to(self.device)).cpu(), prompts_all, torch.cat(images_all))
        metrics.update(clock.times)
        metrics.update(loss=-t.reward_coefficient * rewards.mean().item(), grad_norm=float(np.mean(grad_norms)), truncation_k_mean=float(np.mean(k_used)))
        self.finish_epoch(metrics)
