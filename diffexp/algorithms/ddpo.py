"""DDPO (Black et al., 2024) as a Lightning module, with pluggable exploration.

Each epoch, in four readable units:

1. :meth:`generate`  sample ``num_batches_per_epoch`` batches of trajectories under the
   exploration strategy (embeddings and per-step CFG scales are recorded for replay);
2. :meth:`reward`    score the decoded images on the *original* prompts (reward queries);
3. :meth:`advantages` normalise rewards per prompt (stat tracker, gathered across ranks) or globally;
4. :meth:`update`    PPO-clip updates: inner epochs over shuffled samples, a random subset of
   timesteps per sample, gradient accumulation ending on an optimiser step.
"""

from __future__ import annotations

import numpy as np
import torch

from diffexp.algorithms.base import PhaseClock, RewardFinetuningModule
from diffexp.algorithms.config import DDPOConfig
from diffexp.algorithms.losses import ppo_clip_loss
from diffexp.algorithms.stat_tracker import PerPromptStatTracker, batch_advantages
from diffexp.sampling.trajectory import Trajectory


def cat_trajectories(parts: list[Trajectory]) -> Trajectory:
    """One trajectory batch from several (sampling batches of an epoch)."""
    from dataclasses import fields

    from diffexp.sampling.conditioning import Conditioning

    values = {}
    for f in fields(Trajectory):
        items = [getattr(p, f.name) for p in parts]
        if f.name == "timesteps":
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


class DDPO(RewardFinetuningModule):
    def __init__(self, config: DDPOConfig):
        super().__init__(config)
        st = config.train.stat_tracking
        self.stat_tracker = PerPromptStatTracker(st.buffer_size, st.min_count, st.scale) if st.per_prompt else None
        self.train_generator = torch.Generator()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not getattr(self, "_restored_generator", False):
            self.train_generator.manual_seed(self.config.run.seed * 1000 + 7 + self.global_rank)

    # 1. generate ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self) -> Trajectory:
        s = self.config.sample
        self.unet.eval()
        parts = []
        for _ in range(s.num_batches_per_epoch):
            plan = self.strategy.plan(self.draw_prompts(s.batch_size), s.num_steps, self.sample_generator)
            parts.append(self.sampler.sample(plan, self.sample_generator))
        self.unet.train()
        return cat_trajectories(parts)

    # 2. reward --------------------------------------------------------------------------------
    @torch.no_grad()
    def reward(self, traj: Trajectory) -> torch.Tensor:
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
        return torch.as_tensor(adv[self.global_rank * n : (self.global_rank + 1) * n], dtype=torch.float32, device=self.device)

    @property
    def _prompt_texts(self) -> list[str]:
        if not hasattr(self, "_texts"):
            from diffexp.prompts.weighting import plain_text

            self._texts = [plain_text(p.text) for p in self.train_prompts]
            self._ids = {t: i for i, t in enumerate(self._texts)}
        return self._texts

    def _prompt_id(self, text: str) -> int:
        self._prompt_texts
        return self._ids[text]

    # 4. update --------------------------------------------------------------------------------
    def update(self, traj: Trajectory, advantages: torch.Tensor) -> dict[str, float]:
        t = self.config.train
        n, steps = len(traj), traj.log_probs.shape[1]
        window = torch.tensor(t.window_steps(steps))
        num_train_steps = t.train_steps_per_sample(steps)
        accum = t.gradient_accumulation_steps
        step_weights = self.step_weights(traj, window)
        infos: dict[str, list[float]] = {"loss": [], "approx_kl": [], "clipfrac": [], "ratio": []}
        first_ratio_dev = None
        for inner in range(t.num_inner_epochs):
            order = torch.randperm(n, generator=self.train_generator)
            # ddpo-pytorch: an independent random order of timesteps (here: of the window's) for every sample
            step_order = torch.stack([window[torch.randperm(len(window), generator=self.train_generator)] for _ in range(n)])
            minibatches = order.split(t.batch_size)
            for mb_index, idx in enumerate(minibatches):
                sub = traj.select(idx)
                sub_adv = advantages[idx.to(advantages.device)]
                with self.no_sync():
                    for j in range(num_train_steps):
                        step_idx = step_order[idx, j]
                        log_prob = self.sampler.step_log_prob(sub, step_idx)
                        old = sub.log_probs[torch.arange(len(idx)), step_idx.to(sub.log_probs.device)]
                        weights = None if step_weights is None else step_weights[step_idx].to(log_prob.device)
                        loss, info = ppo_clip_loss(log_prob, old, sub_adv, t.clip_range, t.adv_clip_max, weights)
                        self.check_finite(loss, f"update (inner epoch {inner}, minibatch {mb_index}, timestep {j})")
                        if first_ratio_dev is None:
                            first_ratio_dev = (torch.exp(log_prob - old) - 1).abs().max().item()
                        self.manual_backward(loss / (accum * num_train_steps))
                        infos["loss"].append(loss.item())
                        for k in ("approx_kl", "clipfrac", "ratio"):
                            infos[k].append(info[k].item())
                if (mb_index + 1) % accum == 0:
                    self.sync_gradients()
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, t.max_grad_norm)
                    infos.setdefault("grad_norm", []).append(grad_norm.item())
                    self.step_optimizer()
        out = {k: float(np.mean(v)) for k, v in infos.items() if v}
        out["first_step_ratio_max_dev"] = float(first_ratio_dev)
        return out

    def step_weights(self, traj: Trajectory, window: torch.Tensor) -> torch.Tensor | None:
        """Per-step loss weights (indexed by step, 0 = noisiest) for ``train.step_weighting``, or None."""
        if self.config.train.step_weighting == "none":
            return None
        from diffexp.sampling.ddim import epsilon_logprob_scale

        inverse_gain = 1.0 / epsilon_logprob_scale(self.sampler.scheduler, traj.timesteps.cpu(), self.sampler.eta)
        return inverse_gain / inverse_gain[window].mean()

    # the epoch ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        clock = PhaseClock()
        with clock("time_sampling"):
            traj = self.generate()
        with clock("time_reward"):
            rewards = self.reward(traj)
            advantages = self.advantages(traj, rewards)
        metrics = self.reward_metrics(self.gather(rewards.to(self.device)).cpu(), traj.prompts, traj.images)
        with clock("time_update"):
            metrics.update(self.update(traj, advantages))
        metrics.update(clock.times)
        metrics["cfg_scale_mean"] = traj.guidance_scales.mean().item()
        if self.world_size > 1:  # replicas must stay identical: a cheap check of the gradient sync
            checksum = self.gather(torch.stack([p.detach().double().sum() for p in self.trainable]).sum().reshape(1))
            metrics["ddp_param_divergence"] = (checksum.max() - checksum.min()).item()
        self.finish_epoch(metrics)

    def extra_state(self) -> dict:
        return {
            "stat_tracker": self.stat_tracker.state_dict() if self.stat_tracker else None,
            "train_generator": self.train_generator.get_state(),
        }

    def load_extra_state(self, state: dict) -> None:
        if self.stat_tracker is not None and state.get("stat_tracker"):
            self.stat_tracker.load_state_dict(state["stat_tracker"])
        self.train_generator.set_state(state["train_generator"])
