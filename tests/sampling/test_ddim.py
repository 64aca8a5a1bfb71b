"""The DDIM step and its log-probability, checked against an independent float64 computation."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from diffexp.models.twins import SD_SCHEDULER_CONFIG
from diffexp.sampling.ddim import ddim_step_with_logprob, epsilon_logprob_scale


def reference_logprob(eps, x_t, x_prev, t, t_prev, eta):
    """Written from the DDIM paper (eq. 12, 16) with SD's scaled-linear betas, all in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    a_t = abar[t]
    a_prev = abar[t_prev] if t_prev >= 0 else abar[0]  # set_alpha_to_one=False
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    mean = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
    logpdf = -((x_prev - mean) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return logpdf.reshape(logpdf.shape[0], -1).mean(axis=1), mean


@pytest.fixture
def scheduler():
    s = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    s.set_timesteps(20)
    return s


@pytest.mark.parametrize("step", [0, 7, 19])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_log_prob_matches_float64_gaussian(scheduler, step, eta):
    g = torch.Generator().manual_seed(step)
    x_t, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = int(scheduler.timesteps[step])
    prev, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t, eta, generator=g)
    ref, _ = reference_logprob(eps.double().numpy(), x_t.double().numpy(), prev.double().numpy(), t, t - 50, eta)
    np.testing.assert_allclose(log_prob.double().numpy(), ref, atol=1e-6, rtol=0)


def test_given_prev_sample_is_scored_not_resampled(scheduler):
    g = torch.Generator().manual_seed(0)
    x_t, eps, x_prev = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    t = int(scheduler.timesteps[5])
    out, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t, 1.0, prev_sample=x_prev)
    assert torch.equal(out, x_prev)
    ref, _ = reference_logprob(eps.double().numpy(), x_t.double().numpy(), x_prev.double().numpy(), t, t - 50, 1.0)
    np.testing.assert_allclose(log_prob.double().numpy(), ref, atol=1e-6, rtol=0)


def test_matches_diffusers_step(scheduler):
    """Same mean as diffusers at eta=0; same sample as diffusers at eta=1 given the same generator."""
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = scheduler.timesteps[3]
    ours, _ = ddim_step_with_logprob(scheduler, eps, t, x_t, 0.0)
    theirs = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    ours, _ = ddim_step_with_logprob(scheduler, eps, t, x_t, 1.0, generator=torch.Generator().manual_seed(1))
    theirs = scheduler.step(eps, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(1)).prev_sample
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_per_sample_timesteps_equal_scalar_steps(scheduler):
    x_t, eps, x_prev = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    steps = [2, 11, 19]
    ts = scheduler.timesteps[steps]
    _, batched = ddim_step_with_logprob(scheduler, eps, ts, x_t, 1.0, prev_sample=x_prev)
    for i, t in enumerate(ts):
        _, single = ddim_step_with_logprob(
            scheduler, eps[i : i + 1], t, x_t[i : i + 1], 1.0, prev_sample=x_prev[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-6, rtol=0)


def test_log_prob_undefined_without_noise(scheduler):
    _, log_prob = ddim_step_with_logprob(
        scheduler, torch.randn(2, 4, 8, 8), scheduler.timesteps[0], torch.randn(2, 4, 8, 8), 0.0
    )
    assert torch.isnan(log_prob).all()


def test_requires_set_timesteps():
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_logprob(
            DDIMScheduler(**SD_SCHEDULER_CONFIG), torch.zeros(1, 4, 2, 2), 1, torch.zeros(1, 4, 2, 2), 1.0
        )


@pytest.mark.parametrize("step", [0, 10, 18, 19])
def test_epsilon_logprob_scale_is_the_schedule_gain_of_the_log_prob_gradient(scheduler, step):
    """d log_prob / d eps (autograd through the step) equals z * gain / D for the step's noise z."""
    t = int(scheduler.timesteps[step])
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_(True)
    _, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t, 1.0, generator=torch.Generator().manual_seed(3))
    log_prob.sum().backward()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # the step's noise
    gain = (eps.grad * eps[0].numel() / z).abs()
    torch.testing.assert_close(
        gain, torch.full_like(gain, epsilon_logprob_scale(scheduler, t, 1.0).item()), rtol=1e-4, atol=0
    )


def test_epsilon_logprob_scale_per_sample_timesteps(scheduler):
    steps = scheduler.timesteps[[0, 18, 19]]
    torch.testing.assert_close(
        epsilon_logprob_scale(scheduler, steps, 1.0),
        torch.stack([epsilon_logprob_scale(scheduler, t, 1.0) for t in steps]),
    )


def test_last_step_log_prob_is_finite_when_the_final_alpha_is_one():
    """set_alpha_to_one=True makes the last stochastic step's sigma 0; as in ddpo-pytorch the step
    goes to alphas_cumprod[0] instead, so its log-probability is the float64 Gaussian's. A
    deterministic (eta = 0) last step keeps diffusers' final alpha of 1."""
    s = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "set_alpha_to_one": True})
    s.set_timesteps(20)
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = int(s.timesteps[-1])
    prev, log_prob = ddim_step_with_logprob(s, eps, t, x_t, 1.0, generator=g)
    assert torch.isfinite(log_prob).all()
    ref, _ = reference_logprob(eps.double().numpy(), x_t.double().numpy(), prev.double().numpy(), t, -1, 1.0)
    np.testing.assert_allclose(log_prob.double().numpy(), ref, atol=1e-6, rtol=0)
    deterministic, _ = ddim_step_with_logprob(s, eps, t, x_t, 0.0)
    expected = s.step(eps, t, x_t, eta=0.0).prev_sample
    torch.testing.assert_close(deterministic, expected, rtol=1e-5, atol=1e-5)


def zero_snr_scheduler(num_steps: int) -> DDIMScheduler:
    """SD 2.x-style: zero terminal SNR, trailing timesteps, v-prediction (the first step has alpha_bar 0)."""
    zero_snr = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}
    s = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, **zero_snr})
    s.set_timesteps(num_steps)
    return s


@pytest.mark.parametrize("num_steps", range(10, 51))
def test_zero_terminal_snr_first_and_last_steps_are_finite(num_steps):
    """(1 - alpha_bar_prev - sigma^2) is 0 in exact arithmetic at the first step and negative after
    rounding: clamped, the step is finite and equals the exact-arithmetic step; diffusers' (float32,
    NaN at 10, 20, 40 steps) agrees wherever it is finite, to the square root of its rounding."""
    scheduler = zero_snr_scheduler(num_steps)
    g = torch.Generator().manual_seed(num_steps)
    x_t, v = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for index, atol in ((0, 3e-3), (num_steps - 1, 1e-5)):
        t = scheduler.timesteps[index]
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        ours, log_prob = ddim_step_with_logprob(scheduler, v, t, x_t, 1.0, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(ours).all() and torch.isfinite(log_prob).all()
        if index == 0:  # alpha_bar_t = 0: x0 = -v, and the direction term vanishes (sigma^2 = 1 - alpha_bar_prev)
            a_prev = float(scheduler.alphas_cumprod[int(t) - 1000 // num_steps].double())
            exact = math.sqrt(a_prev) * -v.double() + math.sqrt(1 - a_prev) * noise.double()
            torch.testing.assert_close(ours.double(), exact, atol=1e-5, rtol=0)
        theirs = scheduler.step(v, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(1)).prev_sample
        if torch.isfinite(theirs).all():
            torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)
