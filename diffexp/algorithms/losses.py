"""Pure loss functions of the algorithms (no models, no state): easy to test against references."""

from __future__ import annotations

import torch


def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    adv_clip_max: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO's clipped surrogate (ddpo-pytorch ``train.py``), averaged over the batch.

    loss = mean(w * max(-A * r, -A * clip(r, 1 - eps, 1 + eps))),  r = exp(log_prob - old_log_prob),
    with A clipped to [-adv_clip_max, adv_clip_max] and per-sample weights w (default 1; DDPO's
    ``train.step_weighting`` sets them by each sample's timestep). Also returns approx. KL
    (0.5 * mean((log_prob - old)^2)), the clip fraction and the ratio.
    """
    advantages = advantages.clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    per_sample = torch.maximum(unclipped, clipped)
    loss = (per_sample if weights is None else weights * per_sample).mean()
    with torch.no_grad():
        info = {
            "approx_kl": 0.5 * ((log_prob - old_log_prob) ** 2).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "ratio": ratio.mean(),
        }
    return loss, info


def reward_loss(rewards: torch.Tensor, coefficient: float) -> torch.Tensor:
    """AlignProp's objective: maximise the differentiable reward, i.e. minimise -coefficient * mean(reward)."""
    return -coefficient * rewards.mean()
