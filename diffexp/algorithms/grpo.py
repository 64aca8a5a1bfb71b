"""GRPO (group-relative policy optimisation, as Flow-GRPO and DanceGRPO use it) as a Lightning module.

DDPO's epoch with two changes:

1. advantages are normalised *within each group*, the ``sample.samples_per_prompt`` samples of one
   prompt in the epoch (gathered across ranks), by the group's std or, with ``train.global_std``,
   by the whole batch's (Flow-GRPO's option); a group of one has nothing to normalise within, so
   the batch is the group (DDPO's ``per_prompt: false``);
2. the loss adds ``train.beta`` times the KL from each step's Gaussian to the reference policy's
   (the base model: the LoRA adapter disabled) at the same x_t, Flow-GRPO's KL term: by default as
   ``train_sd3.py`` computes it (the squared mean difference over ``2 std_dev_t^2``, ``std_dev_t`` the
   SDE's noise scale without the step's ``sqrt(sigma - sigma_next)``), so its beta means what it
   means there; ``train.kl: gaussian`` is the exact KL of the two step Gaussians, larger by
   ``1 / (sigma - sigma_next)``. On DDIM models the two coincide (the step's std is the scale).

The defaults are Flow-GRPO's (``config/base.py``: learning rate 3e-4, clip range 1e-4, advantage
clip 5, global std; ``config/grpo.py``'s SD3.5-M configs: timestep fraction 0.99, beta 0.04 GenEval
and OCR, 0.01 PickScore) where they carry over; the rest are DDPO's. Flow-GRPO's groups are 24
images of a prompt, 48 groups an epoch over 32 GPUs; one process samples far fewer
(``sample.samples_per_prompt``).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from pydantic import Field, model_validator

from diffexp.algorithms.ddpo import DDPO, DDPOConfig, PolicyGradientTrainConfig
from diffexp.algorithms.losses import gaussian_kl, group_advantages, grpo_loss
from diffexp.algorithms.registry import register_algorithm
from diffexp.algorithms.stat_tracker import batch_advantages
from diffexp.sampling.trajectory import Trajectory


class GRPOTrainConfig(PolicyGradientTrainConfig):
    learning_rate: float = Field(3e-4, gt=0, description="AdamW learning rate (Flow-GRPO: 3e-4)")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip range (Flow-GRPO: 1e-4)")
    timestep_fraction: float = Field(
        0.99, gt=0, le=1, description="share of the window's steps trained on per sample (Flow-GRPO: 0.99)"
    )
    beta: float = Field(
        0.04, ge=0, description="KL coefficient to the reference policy (Flow-GRPO: 0.04 GenEval, 0.01 PickScore)"
    )
    kl: Literal["flow_grpo", "gaussian"] = Field(
        "flow_grpo",
        description="the KL term: flow_grpo = Flow-GRPO's ||mean - ref_mean||^2 / (2 std_dev_t^2) with std_dev_t the "
        "SDE's noise scale without the step size (what its beta means); gaussian = the exact KL of the two step "
        "Gaussians (std_dev_t sqrt(sigma - sigma_next)). On DDIM models the two are the same",
    )
    global_std: bool = Field(
        True,
        description="divide advantages by the whole batch's reward std (Flow-GRPO's default and its SD3 configs'), "
        "not the group's (DanceGRPO)",
    )


class GRPOConfig(DDPOConfig):
    """A GRPO run: DDPO's batch arithmetic; ``sample.samples_per_prompt`` is the group size."""

    algorithm: Literal["grpo"] = "grpo"  # type: ignore[assignment]
    train: GRPOTrainConfig = Field(default_factory=GRPOTrainConfig)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _reference_exists(self):
        if self.train.beta > 0 and not self.model.use_lora:
            raise ValueError(
                "train.beta > 0 needs the reference policy, the base model: with model.use_lora false there is "
                "no adapter to disable (use LoRA, or set train.beta 0)"
            )
        return self


@register_algorithm("grpo", GRPOConfig, label="GRPO", order=1)
class GRPO(DDPO):
    ALGORITHM_METRICS = (*DDPO.ALGORITHM_METRICS, "kl")

    def make_stat_tracker(self) -> None:
        return None  # groups are the epoch's own samples: nothing is remembered across epochs

    # 3. advantages ----------------------------------------------------------------------------
    def advantages(self, traj: Trajectory, rewards: torch.Tensor) -> torch.Tensor:
        all_rewards = self.gather(rewards.to(self.device)).cpu()
        prompt_ids = torch.tensor([self._prompt_id(p) for p in traj.prompts], device=self.device)
        all_ids = self.gather(prompt_ids).cpu()
        if self.config.sample.samples_per_prompt == 1:
            adv = torch.as_tensor(batch_advantages(all_rewards.numpy()), dtype=torch.float32)
        else:
            adv = group_advantages(all_rewards, all_ids, global_std=self.config.train.global_std)
        n = len(traj)
        return adv[self.global_rank * n : (self.global_rank + 1) * n].to(self.device)

    # 4. the loss of one timestep: PPO-clip plus beta * KL to the reference -------------------------
    def step_loss(self, traj, step_index, old_log_prob, advantages, weights):
        t = self.config.train
        step = self.sampler.step_distribution(traj, step_index)
        kl = None
        if t.beta > 0:
            with torch.no_grad(), self.reference_policy():
                reference = self.sampler.step_distribution(traj, step_index)
            std = (
                step.std if t.kl == "gaussian" else self.sampler.kl_std(self._step_indices(traj, step_index), step.std)
            )
            kl = gaussian_kl(step.mean, reference.mean, std).float()
        loss, info = grpo_loss(
            step.log_prob, old_log_prob, advantages, t.clip_range, t.adv_clip_max, kl, t.beta, weights
        )
        return loss, info, step.log_prob

    @staticmethod
    def _step_indices(traj, step_index) -> torch.Tensor:
        steps = torch.as_tensor(step_index, dtype=torch.long)
        return steps.expand(len(traj)) if steps.ndim == 0 else steps

    @contextlib.contextmanager
    def reference_policy(self):
        """The base model: the adapter disabled for the duration."""
        self.denoiser.disable_adapters()
        try:
            yield
        finally:
            self.denoiser.enable_adapters()
