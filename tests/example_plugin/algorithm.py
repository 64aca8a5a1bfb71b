"""An algorithm: REINFORCE on the last denoising step, loss = -mean((r - mean r) log pi(x_0 | x_1))."""

from typing import Literal

import torch
from pydantic import Field

from diffexp.algorithms.base import RewardFinetuningModule
from diffexp.algorithms.config import AlgorithmConfig, TrainConfig


class LastStepConfig(AlgorithmConfig):
    algorithm: Literal["example_last_step"] = "example_last_step"
    train: TrainConfig = Field(default_factory=TrainConfig)


class LastStepReinforce(RewardFinetuningModule):
    @torch.no_grad()
    def generate(self, round_index):
        s = self.config.sample
        plan = self.strategy.plan(self.draw_prompts(s.batch_size), s.num_steps, self.streams.exploration)
        return self.sampler.sample(plan, self.streams.noise)

    def advantages(self, traj, rewards):
        return rewards - rewards.mean()

    def update(self, traj, rewards, advantages, round_index):
        log_prob = self.sampler.step_log_prob(traj, traj.log_probs.shape[1] - 1)
        loss = -(advantages.to(log_prob) * log_prob).mean()
        self.manual_backward(loss)
        self.step_optimizer()
        return {"loss": loss.item()}
