"""GRPO's KL term on flow models is Flow-GRPO's (its beta means what it means there), the exact
Gaussian KL is an option, and on DDIM models the two coincide."""

import math

import numpy as np
import pytest
import torch

from diffexp.algorithms.losses import gaussian_kl
from diffexp.models import get_pipeline
from diffexp.sampling.flow_sde import flow_sde_step
from diffexp.sampling.flow_trajectory import make_sampler

NOISE_LEVEL = 0.7


@pytest.fixture(scope="module")
def sd3_sampler():
    return make_sampler(get_pipeline("tiny-sd3"), num_steps=10, eta=NOISE_LEVEL)


def flow_grpo_kl_ported(sigmas, j, sample, velocity, ref_velocity, noise_level):
    """Flow-GRPO's lines as they are (``sd3_sde_with_logprob.py`` and ``train_sd3.py``), float64:
    std_dev_t = sqrt(sigma / (1 - where(sigma == 1, sigma_max, sigma))) * noise_level;
    prev_sample_mean = sample * (1 + std_dev_t**2 / (2 * sigma) * dt)
                       + model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt;
    kl_loss = ((prev_sample_mean - prev_sample_mean_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True)
              / (2 * std_dev_t**2)."""
    sigma, sigma_prev = sigmas[j], sigmas[j + 1]
    sigma_max = sigmas[1]
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level

    def mean(model_output):
        return (
            sample * (1 + std_dev_t**2 / (2 * sigma) * dt)
            + model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
        )

    kl = ((mean(velocity) - mean(ref_velocity)) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std_dev_t**2)
    return kl.reshape(-1)


@pytest.mark.parametrize("j", range(9))
def test_flow_kl_is_flow_grpos_and_the_gaussian_option_is_exact(sd3_sampler, j):
    sigmas = sd3_sampler.sigmas
    g = torch.Generator().manual_seed(j)
    sample = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    velocity = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    ref_velocity = velocity + 0.1
    pol = flow_sde_step(velocity, sigmas[j], sigmas[j + 1], sample, NOISE_LEVEL, sd3_sampler.sigma_max)
    ref = flow_sde_step(ref_velocity, sigmas[j], sigmas[j + 1], sample, NOISE_LEVEL, sd3_sampler.sigma_max)
    steps = torch.full((3,), j)
    default = gaussian_kl(pol.mean, ref.mean, sd3_sampler.kl_std(steps, pol.std))
    ported = flow_grpo_kl_ported(sigmas, j, sample, velocity, ref_velocity, NOISE_LEVEL)
    np.testing.assert_allclose(default.numpy(), ported.numpy(), rtol=1e-10)
    # the exact KL of N(m, s^2 dt) and N(m_ref, s^2 dt), written from the formula
    sigma, d_sigma = float(sigmas[j]), float(sigmas[j] - sigmas[j + 1])
    s = NOISE_LEVEL * math.sqrt(sigma / (1 - (float(sigmas[1]) if sigma >= 1 else sigma)))
    exact = ((pol.mean - ref.mean) ** 2).mean(dim=(1, 2, 3)) / (2 * s**2 * d_sigma)
    gaussian = gaussian_kl(pol.mean, ref.mean, pol.std)
    np.testing.assert_allclose(gaussian.numpy(), exact.numpy(), rtol=1e-10)
    np.testing.assert_allclose((gaussian / default).numpy(), 1 / d_sigma, rtol=1e-10)  # what the issue measured


def test_ddim_kl_scale_is_the_steps_own_std():
    sampler = make_sampler(get_pipeline("tiny-sd15"), num_steps=4, eta=1.0)
    std = torch.tensor([0.3, 0.5])
    assert torch.equal(sampler.kl_std(torch.tensor([1, 2]), std), std)


def test_grpo_uses_flow_grpos_kl_by_default():
    from diffexp.algorithms.grpo import GRPOTrainConfig

    assert GRPOTrainConfig().kl == "flow_grpo"
    with pytest.raises(ValueError):
        GRPOTrainConfig(kl="other")
