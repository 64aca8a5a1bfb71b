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


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """KL between two Gaussian transitions with the same per-step std (Flow-GRPO's KL to the
    reference policy): ||mean - ref_mean||^2 / (2 std^2), averaged over each sample's elements."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    dims = tuple(range(1, mean.ndim))
    return ((mean - ref_mean) ** 2).mean(dim=dims) / (2 * std.reshape(-1) ** 2)


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    adv_clip_max: float,
    kl: torch.Tensor | None = None,
    beta: float = 0.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's objective (Flow-GRPO ``train_sd3.py``, DanceGRPO): the PPO-clip surrogate on the
    per-step log-probability ratio plus ``beta`` times the per-sample KL to the reference policy
    (``kl``, e.g. :func:`gaussian_kl`), averaged over the batch; ``weights`` weight the surrogate per
    sample as DDPO's. With ``beta`` 0 it is DDPO's loss."""
    policy, info = ppo_clip_loss(log_prob, old_log_prob, advantages, clip_range, adv_clip_max, weights)
    if kl is None or beta == 0.0:
        info["kl"] = torch.zeros((), dtype=log_prob.dtype) if kl is None else kl.detach().mean()
        return policy, info
    kl_term = kl.mean()
    info["kl"] = kl_term.detach()
    return policy + beta * kl_term, info


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, global_std: bool = False, eps: float = 1e-4):
    """GRPO's advantages: each reward minus its group's mean (``groups``: a group id per sample, e.g.
    the prompt), divided by the group's std, or with ``global_std`` by the whole batch's (Flow-GRPO's
    option); ``eps`` as Flow-GRPO. Stds are population stds (ddof 0), as numpy's and Flow-GRPO's."""
    rewards = rewards.double()
    out = torch.empty_like(rewards)
    batch_std = rewards.std(unbiased=False)
    for group in torch.unique(groups):
        members = groups == group
        values = rewards[members]
        std = batch_std if global_std else values.std(unbiased=False)
        out[members] = (values - values.mean()) / (std + eps)
    return out.float()


def reward_loss(rewards: torch.Tensor, coefficient: float) -> torch.Tensor:
    """AlignProp's objective: maximise the differentiable reward, i.e. minimise -coefficient * mean(reward)."""
    return -coefficient * rewards.mean()
