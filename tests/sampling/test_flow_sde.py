"""The flow-matching SDE step (a building block of issue 27) against float64 references written
from the formulas, and its noise-free limit against diffusers' Euler scheduler."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffexp.sampling.flow_sde import flow_sde_step


def reference_step(v, sigma, sigma_next, x, x_next, noise_level):
    """Element by element in float64: Flow-GRPO's SDE mean and the Gaussian log-density."""
    d = sigma_next - sigma
    s = noise_level * math.sqrt(sigma / (1 - sigma))
    std = s * math.sqrt(-d)
    total = 0.0
    means = []
    for vi, xi, yi in zip(v, x, x_next):
        mean = xi + (vi + s * s / (2 * sigma) * (xi + (1 - sigma) * vi)) * d
        means.append(mean)
        total += -((yi - mean) ** 2) / (2 * std * std) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return np.array(means), total / len(v), std


@pytest.mark.parametrize("sigma, sigma_next, noise_level", [(0.9, 0.8, 0.7), (0.5, 0.45, 1.0), (0.2, 0.05, 0.3)])
def test_log_prob_and_mean_equal_a_float64_reference(sigma, sigma_next, noise_level):
    g = torch.Generator().manual_seed(0)
    v, x = (
        torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
    )
    step = flow_sde_step(v, sigma, sigma_next, x, noise_level, generator=torch.Generator().manual_seed(1))
    for i in range(3):
        mean, log_prob, std = reference_step(
            v[i].flatten().tolist(),
            sigma,
            sigma_next,
            x[i].flatten().tolist(),
            step.prev_sample[i].flatten().tolist(),
            noise_level,
        )
        np.testing.assert_allclose(step.mean[i].flatten().numpy(), mean, rtol=0, atol=1e-12)
        assert step.log_prob[i].item() == pytest.approx(log_prob, abs=1e-6)
        assert step.std[i].item() == pytest.approx(std, rel=1e-12)
    replay = flow_sde_step(v, sigma, sigma_next, x, noise_level, prev_sample=step.prev_sample)
    torch.testing.assert_close(replay.log_prob, step.log_prob, rtol=0, atol=0)  # a replay is exact


def test_without_noise_it_is_diffusers_euler_step():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(6)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for i, t in enumerate(scheduler.timesteps[:-1]):
        v = torch.randn(2, 4, 8, 8, generator=g)
        expected = scheduler.step(v, t, x).prev_sample
        sigma, sigma_next = scheduler.sigmas[i].item(), scheduler.sigmas[i + 1].item()
        got = flow_sde_step(v, sigma, sigma_next, x, noise_level=0.0, sigma_max=scheduler.sigmas[1].item())
        torch.testing.assert_close(got.prev_sample, expected, rtol=0, atol=1e-5)
        assert (got.log_prob == 0).all() and (got.std == 0).all()
        x = expected


def test_bad_steps_are_errors():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="larger sigma to a smaller"):
        flow_sde_step(x, 0.5, 0.6, x)
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_step(x, 1.0, 0.9, x)
    assert flow_sde_step(x, 1.0, 0.9, x, sigma_max=0.95, generator=torch.Generator().manual_seed(0)).std.item() > 0


def test_noise_free_sde_steps_reproduce_the_sd3_pipeline():
    """On the SD3 twin, the diffusers pipeline's own loop with its Euler steps replaced by
    ``flow_sde_step(noise_level=0)`` gives the pipeline's image (fp32)."""
    from diffexp.models.twins import tiny_sd3_pipeline

    pipe = tiny_sd3_pipeline()
    prompt, steps, guidance = ["a red circle above a blue square"], 4, 4.5
    expected = pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt, prompt, prompt, do_classifier_free_guidance=True
        )
        size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
        latents = pipe.prepare_latents(1, 4, size, size, embeds.dtype, "cpu", torch.Generator().manual_seed(0))
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        sigmas = scheduler.sigmas
        for i, t in enumerate(scheduler.timesteps):
            out = pipe.transformer(
                hidden_states=torch.cat([latents] * 2),
                timestep=t.expand(2),
                encoder_hidden_states=torch.cat([negative, embeds]),
                pooled_projections=torch.cat([negative_pooled, pooled]),
                return_dict=False,
            )[0]
            uncond, cond = out.chunk(2)
            velocity = uncond + guidance * (cond - uncond)
            latents = flow_sde_step(velocity, sigmas[i], sigmas[i + 1], latents, noise_level=0.0).prev_sample
        latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        image = (pipe.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)
    assert (image - expected).abs().max() <= 1e-5
