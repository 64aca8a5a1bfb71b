"""One step of a flow-matching sampler as a stochastic policy, with its log-probability.

Flow-GRPO (Liu et al. 2025) turns the flow ODE ``dx = v dσ`` into an SDE with the same marginals so
that a step is a Gaussian transition with a tractable log-density: from noise level ``σ`` to the
next, smaller ``σ'`` (``dσ = σ' - σ < 0``),

    mean = x + [v + s²/(2σ) (x + (1 - σ) v)] dσ,   x' = mean + s √(-dσ) ε,
    s = noise_level √(σ / (1 - σ))  (at σ = 1, σ_max, the largest σ below 1, stands in for σ),

where ``v`` is the model's velocity. With ``noise_level`` 0 the step is the Euler ODE step of
diffusers' ``FlowMatchEulerDiscreteScheduler``. The log-probability is the Gaussian's, averaged
over a sample's elements (as ddpo-pytorch and Flow-GRPO average theirs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class FlowStep:
    prev_sample: torch.Tensor
    log_prob: torch.Tensor  # per sample; zeros when the step has no noise
    mean: torch.Tensor
    std: torch.Tensor  # per sample: s * sqrt(-dσ), the transition's standard deviation


def flow_sde_step(
    velocity: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    sample: torch.Tensor,
    noise_level: float | torch.Tensor = 0.7,
    sigma_max: float | None = None,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> FlowStep:
    """The step from ``sigma`` to ``sigma_next`` (scalars, or one per sample); ``prev_sample`` given:
    its log-probability under this step (a replay), else a new draw from ``generator``."""
    batch = sample.shape[0]
    shape = (batch,) + (1,) * (sample.ndim - 1)

    def per_sample(value) -> torch.Tensor:
        value = torch.as_tensor(value, dtype=sample.dtype, device=sample.device)
        return value.reshape(-1).expand(batch).reshape(shape) if value.numel() == 1 else value.reshape(shape)

    sigma, sigma_next, noise_level = per_sample(sigma), per_sample(sigma_next), per_sample(noise_level)
    d_sigma = sigma_next - sigma
    if bool((d_sigma >= 0).any()):
        raise ValueError("a flow step goes from a larger sigma to a smaller one")
    at_one = sigma >= 1.0
    if bool((at_one & (noise_level > 0)).any()) and sigma_max is None:
        raise ValueError("sigma = 1 needs sigma_max (the largest sigma below 1) for the SDE's noise scale")
    safe_sigma = torch.where(at_one, torch.full_like(sigma, sigma_max or 0.5), sigma)
    s = noise_level * torch.sqrt(sigma / (1 - safe_sigma))
    mean = sample + (velocity + s**2 / (2 * sigma) * (sample + (1 - sigma) * velocity)) * d_sigma
    std = s * torch.sqrt(-d_sigma)
    if prev_sample is None:
        noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device="cpu").to(sample.device)
        prev_sample = mean + std * noise
    noisy = (std > 0).reshape(batch)
    log_prob = torch.zeros(batch, dtype=sample.dtype, device=sample.device)
    if bool(noisy.any()):
        sd = std[noisy]
        density = (
            -((prev_sample[noisy] - mean[noisy]) ** 2) / (2 * sd**2) - torch.log(sd) - math.log(math.sqrt(2 * math.pi))
        )
        log_prob[noisy] = density.mean(dim=tuple(range(1, sample.ndim)))
    return FlowStep(prev_sample, log_prob, mean, std.reshape(batch))
