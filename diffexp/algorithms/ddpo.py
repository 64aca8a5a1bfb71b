"""DDPO (Black et al., 2024) as a Lightning module, with pluggable exploration; its config.

Each epoch is one round of the shared template (``base``):

1. :meth:`generate`   sample ``num_batches_per_epoch`` batches of trajectories under the
   exploration strategy (embeddings and per-step CFG scales are recorded for replay);
2. ``reward``          score the decoded images on the *original* prompts (reward queries);
3. :meth:`advantages` normalise rewards per prompt (stat tracker, gathered across ranks) or globally;
4. :meth:`update`     PPO-clip updates: inner epochs over shuffled samples, a random subset of
   timesteps per sample, gradient accumulation ending on an optimiser step.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from diffexp.algorithms.base import RewardFinetuningModule
from diffexp.algorithms.config import AlgorithmConfig, StrictConfig, TrainConfig
from diffexp.algorithms.losses import ppo_clip_loss
from diffexp.algorithms.registry import register_algorithm
from diffexp.algorithms.stat_tracker import PerPromptStatTracker, batch_advantages
from diffexp.sampling.trajectory import Trajectory


class StatTrackingConfig(StrictConfig):
    per_prompt: bool = Field(True, description="normalise advantages per prompt (True) or over the whole batch")
    buffer_size: int = Field(16, ge=1, description="rewards remembered per prompt (ddpo-pytorch: 16)")
    min_count: int = Field(16, ge=1, description="below this many, fall back to batch statistics (ddpo-pytorch: 16)")
    scale: Literal["prompt", "batch"] = Field(
        "prompt",
        description="divide by each prompt's reward std (ddpo-pytorch) or by one pooled within-prompt std of the batch",
    )


class PolicyGradientTrainConfig(TrainConfig):
    """The PPO-clip fields DDPO and GRPO share (the defaults are ddpo-pytorch's)."""

    learning_rate: float = Field(3e-4, gt=0, description="AdamW learning rate (ddpo-pytorch: 3e-4)")
    batch_size: int = Field(4, ge=1, description="samples per training minibatch, per device")
    gradient_accumulation_steps: int = Field(2, ge=1, description="minibatches accumulated per optimiser step")
    num_inner_epochs: int = Field(1, ge=1, description="passes over each epoch's samples (ddpo-pytorch: 1)")
    timestep_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the window's steps trained on, drawn at random per sample"
    )
    timestep_window: tuple[float, float] = Field(
        (0.0, 1.0),
        description="part of each trajectory whose steps may be trained, as fractions of the sampling steps from "
        "the first (noisiest): (0, 0.5) trains only the first half, where the layout is decided (ddpo-pytorch: all "
        "steps)",
    )
    step_weighting: Literal["none", "epsilon"] = Field(
        "none",
        description="weight of each timestep's PPO term: 'none' (ddpo-pytorch) or 'epsilon', which divides it by "
        "the schedule's gain |d mean/d eps| / std_t (normalised to mean 1 over the window) so every step's gradient "
        "is in "
        "noise-prediction units; without it the second-to-last step's gain is ~6x the others' (20-step DDIM)",
    )
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip range (ddpo-pytorch: 1e-4)")
    adv_clip_max: float = Field(5.0, gt=0, description="advantages are clipped to [-adv_clip_max, adv_clip_max]")

    @model_validator(mode="after")
    def _window_in_order(self):
        start, end = self.timestep_window
        if not 0 <= start < end <= 1:
            raise ValueError(
                f"train.timestep_window must satisfy 0 <= start < end <= 1, got {list(self.timestep_window)}"
            )
        return self

    def window_steps(self, num_steps: int) -> range:
        """Indices (0 = the first, noisiest sampling step) of the steps that may be trained."""
        start = math.floor(self.timestep_window[0] * num_steps)
        return range(start, max(start + 1, math.ceil(self.timestep_window[1] * num_steps)))

    def train_steps_per_sample(self, num_steps: int) -> int:
        return max(1, int(len(self.window_steps(num_steps)) * self.timestep_fraction))


class DDPOTrainConfig(PolicyGradientTrainConfig):
    stat_tracking: StatTrackingConfig = Field(default_factory=StatTrackingConfig)


class DDPOConfig(AlgorithmConfig):
    """A DDPO run. Batch arithmetic, per epoch::

        samples per epoch  = sample.batch_size * sample.num_batches_per_epoch * num_devices
        minibatches        = samples per epoch / (train.batch_size * num_devices)
        optimiser steps    = minibatches / train.gradient_accumulation_steps   (per inner epoch)

    and each minibatch backpropagates through ``int(window steps * train.timestep_fraction)``
    denoising steps (the window is ``train.timestep_window`` of the ``sample.num_steps``; all of
    them by default), accumulated into the same optimiser step.
    """

    algorithm: Literal["ddpo"] = "ddpo"
    train: DDPOTrainConfig = Field(default_factory=DDPOTrainConfig)

    @model_validator(mode="after")
    def _noise_window_meets_the_train_window(self):
        """With ``sde_window`` only the window's steps have a log-probability: every window a sample
        can draw must share a step with ``train.timestep_window`` (checked now, not after an epoch)."""
        e = self.exploration
        if e.strategy != "sde_window" or e.noise_window.outside > 0:
            return self
        from diffexp.exploration.step_windows import window_starts

        n = self.sample.num_steps
        trained = set(self.train.window_steps(n))
        for start, length in window_starts(e.noise_window, n):
            if not trained & set(range(start, start + length)):
                raise ValueError(
                    f"exploration.noise_window can put a sample's noisy steps at {start}..{start + length - 1} of "
                    f"{n}, outside train.timestep_window {list(self.train.timestep_window)} (steps "
                    f"{min(trained)}..{max(trained)}): such a sample has nothing to train on; make them overlap"
                )
        return self

    @model_validator(mode="after")
    def _batch_arithmetic(self):
        if self.sample.eta == 0:
            raise ValueError(
                "sample.eta must be > 0 for DDPO: with eta = 0 DDIM is deterministic and has no log-probability"
            )
        samples = self.sample.batch_size * self.sample.num_batches_per_epoch
        per_step = self.train.batch_size * self.train.gradient_accumulation_steps
        if samples % self.train.batch_size:
            raise ValueError(
                f"sample.batch_size * sample.num_batches_per_epoch ({samples}) must be a multiple of "
                f"train.batch_size ({self.train.batch_size})"
            )
        if samples % per_step:
            raise ValueError(
                f"samples per epoch per device ({samples}) must be a multiple of train.batch_size * "
                f"train.gradient_accumulation_steps ({per_step}) so that an optimiser step ends each inner epoch"
            )
        return self

    def batch_arithmetic(self) -> dict[str, int]:
        devices = self.run.devices
        samples = self.sample.batch_size * self.sample.num_batches_per_epoch * devices
        minibatches = samples // (self.train.batch_size * devices)
        return {
            "samples_per_epoch": samples,
            "minibatches_per_inner_epoch": minibatches,
            "optimizer_steps_per_epoch": self.train.num_inner_epochs
            * minibatches
            // self.train.gradient_accumulation_steps,
            "train_timesteps_per_sample": self.train.train_steps_per_sample(self.sample.num_steps),
        }

    def batch_arithmetic_text(self) -> str:
        window = self.train.window_steps(self.sample.num_steps)
        text = super().batch_arithmetic_text()
        if len(window) < self.sample.num_steps:
            text += f" (drawn from steps {window.start}-{window.stop - 1} of 0-{self.sample.num_steps - 1})"
        return text


def cat_trajectories(parts: list[Trajectory]) -> Trajectory:
    """One trajectory batch from several (sampling batches of an epoch)."""
    from dataclasses import fields

    from diffexp.sampling.conditioning import Conditioning

    values = {}
    for f in fields(Trajectory):
        items = [getattr(p, f.name) for p in parts]
        if f.name in Trajectory.SHARED:
            values[f.name] = items[0]
        elif items[0] is None:
            values[f.name] = None
        elif isinstance(items[0], list):
            values[f.name] = [x for item in items for x in item]
        elif isinstance(items[0], Conditioning):
            values[f.name] = Conditioning.cat(items)
        else:
            values[f.name] = torch.cat(items)
    return Trajectory(**values)


@register_algorithm("ddpo", DDPOConfig, label="DDPO", order=0)
class DDPO(RewardFinetuningModule):
    ALGORITHM_METRICS = (
        *("loss", "approx_kl", "clipfrac", "ratio", "grad_norm", "first_step_ratio_max_dev", "cfg_scale_mean"),
        "ddp_param_divergence",
    )

    def __init__(self, config: DDPOConfig):
        super().__init__(config)
        self.stat_tracker = self.make_stat_tracker()
        self.train_generator = torch.Generator()

    def make_stat_tracker(self) -> PerPromptStatTracker | None:
        st = self.config.train.stat_tracking
        return PerPromptStatTracker(st.buffer_size, st.min_count, st.scale) if st.per_prompt else None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not getattr(self, "_restored_generator", False):
            self.train_generator.manual_seed(self.config.run.seed * 1000 + 7 + self.global_rank)

    # 1. generate ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, round_index: int = 0) -> Trajectory:
        s = self.config.sample
        self.denoiser.eval()
        parts = []
        for _ in range(s.num_batches_per_epoch):
            plan = self.strategy.plan(self.draw_prompts(s.batch_size), s.num_steps, self.streams.exploration)
            parts.append(self.sampler.sample(plan, self.streams.noise, latents=self.initial_noise(s.batch_size)))
        self.denoiser.train()
        return cat_trajectories(parts)

    # 2. reward: the template's (``base.reward``), without gradients --------------------------
    @torch.no_grad()
    def reward(self, traj: Trajectory, round_index: int = 0) -> torch.Tensor:
        return self.score(traj.images, traj.prompts, step="reward")

    # 3. advantages ----------------------------------------------------------------------------
    def advantages(self, traj: Trajectory, rewards: torch.Tensor) -> torch.Tensor:
        """Statistics over the *global* batch (all ranks), then this rank's slice."""
        all_rewards = self.gather(rewards.to(self.device)).cpu().numpy()
        prompt_ids = torch.tensor([self._prompt_id(p) for p in traj.prompts], device=self.device)
        all_ids = self.gather(prompt_ids).cpu().numpy()
        if self.stat_tracker is not None:
            adv = self.stat_tracker.update([self._prompt_texts[i] for i in all_ids], all_rewards)
        else:
            adv = batch_advantages(all_rewards)
        n = len(traj)
        return torch.as_tensor(
            adv[self.global_rank * n : (self.global_rank + 1) * n], dtype=torch.float32, device=self.device
        )

    @property
    def _prompt_texts(self) -> list[str]:
        if not hasattr(self, "_texts"):
            from diffexp.prompts.weighting import plain_text

            self._texts = [plain_text(p.text) for p in self.train_prompts]
        return self._texts

    def _prompt_id(self, text: str) -> int:
        if not hasattr(self, "_ids"):
            self._ids = {t: i for i, t in enumerate(self._prompt_texts)}
        return self._ids[text]

    # 4. update --------------------------------------------------------------------------------
    def update(
        self, traj: Trajectory, rewards: torch.Tensor, advantages: torch.Tensor, round_index: int = 0
    ) -> dict[str, float]:
        t = self.config.train
        n, steps = len(traj), traj.log_probs.shape[1]
        window = torch.tensor(t.window_steps(steps))
        eligible = self.trainable_steps(traj, window)
        num_train_steps = max(1, int(int(eligible.sum(dim=1).min()) * t.timestep_fraction))
        accum = t.gradient_accumulation_steps
        step_weights = self.step_weights(traj, window)
        infos: dict[str, list[float]] = {"loss": [], "approx_kl": [], "clipfrac": [], "ratio": []}
        first_ratio_dev = None
        for inner in range(t.num_inner_epochs):
            order = torch.randperm(n, generator=self.train_generator)
            # ddpo-pytorch: an independent random order of timesteps (here: of the window's) for every sample
            step_order = torch.stack([self._shuffled(eligible[b], num_train_steps) for b in range(n)])
            minibatches = order.split(t.batch_size)
            for mb_index, idx in enumerate(minibatches):
                sub = traj.select(idx)
                sub_adv = advantages[idx.to(advantages.device)]
                with self.no_sync():
                    for j in range(num_train_steps):
                        step_idx = step_order[idx, j]
                        old = sub.log_probs[torch.arange(len(idx)), step_idx.to(sub.log_probs.device)]
                        weights = None if step_weights is None else step_weights[step_idx].to(old.device)
                        loss, info, log_prob = self.step_loss(sub, step_idx, old, sub_adv, weights)
                        self.check_finite(loss, f"update (inner epoch {inner}, minibatch {mb_index}, timestep {j})")
                        if first_ratio_dev is None:
                            first_ratio_dev = (torch.exp(log_prob.detach() - old) - 1).abs().max().item()
                        self.manual_backward(loss / (accum * num_train_steps))
                        infos["loss"].append(loss.item())
                        for k, value in info.items():
                            infos.setdefault(k, []).append(value.item())
                if (mb_index + 1) % accum == 0:
                    self.sync_gradients()
                    infos.setdefault("grad_norm", []).append(self.clip_gradients(t.max_grad_norm))
                    self.step_optimizer(f"update (inner epoch {inner}, minibatch {mb_index})")
        out = {k: float(np.mean(v)) for k, v in infos.items() if v}
        out["first_step_ratio_max_dev"] = float(first_ratio_dev)
        out["cfg_scale_mean"] = traj.guidance_scales.mean().item()
        if self.world_size > 1 and not self.sharded:  # replicas must stay identical: a check of the gradient sync
            checksum = self.gather(torch.stack([p.detach().double().sum() for p in self.trainable]).sum().reshape(1))
            out["ddp_param_divergence"] = (checksum.max() - checksum.min()).item()
        return out

    def step_loss(
        self,
        traj: Trajectory,
        step_index: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The loss of one timestep per sample of a minibatch: (loss, metrics, new log-probs)."""
        t = self.config.train
        log_prob = self.sampler.step_log_prob(traj, step_index)
        loss, info = ppo_clip_loss(log_prob, old_log_prob, advantages, t.clip_range, t.adv_clip_max, weights)
        return loss, info, log_prob

    def trainable_steps(self, traj: Trajectory, window: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: the window's steps that drew noise (a deterministic step has no log-probability)."""
        in_window = torch.zeros(traj.log_probs.shape[1], dtype=torch.bool)
        in_window[window] = True
        eligible = traj.stochastic_steps() & in_window
        if bool((eligible.sum(dim=1) == 0).any()):
            raise ValueError(
                "a sample has no stochastic step inside train.timestep_window: the exploration's noise window "
                "(exploration.noise_window) and train.timestep_window must overlap"
            )
        return eligible

    def _shuffled(self, eligible: torch.Tensor, count: int) -> torch.Tensor:
        steps = eligible.nonzero().flatten()
        return steps[torch.randperm(len(steps), generator=self.train_generator)][:count]

    def step_weights(self, traj: Trajectory, window: torch.Tensor) -> torch.Tensor | None:
        """Per-step loss weights (indexed by step, 0 = noisiest) for ``train.step_weighting``, or None."""
        if self.config.train.step_weighting == "none":
            return None
        from diffexp.sampling.ddim import epsilon_logprob_scale

        inverse_gain = 1.0 / epsilon_logprob_scale(self.sampler.scheduler, traj.timesteps.cpu(), self.sampler.eta)
        return inverse_gain / inverse_gain[window].mean()

    def extra_state(self) -> dict:
        return {
            "stat_tracker": self.stat_tracker.state_dict() if self.stat_tracker else None,
            "train_generator": self.train_generator.get_state(),
        }

    def load_extra_state(self, state: dict) -> None:
        if self.stat_tracker is not None and state.get("stat_tracker"):
            self.stat_tracker.load_state_dict(state["stat_tracker"])
        self.train_generator.set_state(state["train_generator"])
