"""A DDIM step that also returns the log-probability of the step it took.

DDIM with ``eta > 0`` is a Gaussian policy: x_{t-1} ~ N(mean(x_t, eps), std_t^2 I). DDPO needs
log pi(x_{t-1} | x_t) both while sampling and, later, for the *same* x_{t-1} under updated weights.
The formulas are diffusers' ``DDIMScheduler.step`` (eq. 12 of Song et al., 2021) written out so
the mean and standard deviation are available; the scheduler object only supplies its schedule.
As in ddpo-pytorch, the log-density is averaged (not summed) over the latent dimensions.

The step's arithmetic runs in float64 (it is elementwise and cheap next to the UNet): near the
end of sampling sigma_t is small, and float32 rounding of the mean, divided by sigma_t^2,
would otherwise move the log-probability by ~1e-6 and with it the PPO ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Shape per-sample scalars (B,) or a scalar to (B, 1, 1, ...) for arithmetic with ``like``."""
    values = values.to(device=like.device, dtype=like.dtype)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _alphas_cumprod(scheduler: DDIMScheduler, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The cumulative product in float64 from the scheduler's betas (diffusers keeps it in float32).

    Cached on the scheduler per device: a host-to-device copy at every step would stall the GPU.
    """
    cache = scheduler.__dict__.setdefault("_diffexp_alphas_cumprod", {})
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = torch.cumprod(1.0 - scheduler.betas.to(device, dtype), dim=0)
    return cache[key]


def _alpha_products(
    scheduler: DDIMScheduler, timestep: torch.Tensor, dtype: torch.dtype, stochastic: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_bar at ``timestep`` and at the step it goes to (the final alpha past t = 0), shaped like ``timestep``.

    With ``set_alpha_to_one`` the final alpha is 1, which makes a stochastic last step's sigma 0 and
    its log-density undefined; a stochastic step then goes to ``alphas_cumprod[0]``, as
    ddpo-pytorch's does (it clamps the previous timestep at 0). Deterministic steps keep diffusers'.
    """
    config = scheduler.config
    alphas_cumprod = _alphas_cumprod(scheduler, timestep.device, dtype)
    prev_timestep = timestep - config.num_train_timesteps // scheduler.num_inference_steps
    one = config.set_alpha_to_one and not stochastic
    final_alpha = torch.ones((), device=timestep.device, dtype=dtype) if one else alphas_cumprod[0]
    alpha_prod_t = alphas_cumprod.gather(0, timestep.reshape(-1).long()).reshape(timestep.shape)
    alpha_prod_t_prev = torch.where(
        prev_timestep >= 0,
        alphas_cumprod.gather(0, prev_timestep.clamp(min=0).reshape(-1).long()).reshape(timestep.shape),
        final_alpha,
    )
    return alpha_prod_t, alpha_prod_t_prev


def epsilon_logprob_scale(scheduler: DDIMScheduler, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
    """|d mean / d eps| / std_t of each DDIM step, for an epsilon-predicting model.

    The gradient of a step's log-probability is ``z * (d mean / d eps) / std_t * d eps / d theta``
    (``z`` the step's standard normal noise), so this factor is how much the schedule alone
    amplifies a step's policy gradient. Dividing a step's loss by it measures every step's
    gradient in noise-prediction units (``train.step_weighting``).
    """
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(
            f"epsilon_logprob_scale needs an epsilon-predicting scheduler, got {scheduler.config.prediction_type!r}"
        )
    if eta <= 0:
        raise ValueError("a deterministic (eta = 0) step has no log-probability to scale")
    timesteps = torch.as_tensor(timesteps)
    alpha_prod_t, alpha_prod_t_prev = _alpha_products(scheduler, timesteps, torch.float64)
    std_dev_t = eta * ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)) ** 0.5
    # mean = sqrt(a_prev) * (x - sqrt(1 - a_t) eps) / sqrt(a_t) + sqrt(1 - a_prev - std^2) eps
    d_mean_d_eps = (
        -((alpha_prod_t_prev * (1 - alpha_prod_t) / alpha_prod_t) ** 0.5)
        + (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5
    )
    return (d_mean_d_eps.abs() / std_dev_t).float()


@dataclass
class DDIMStep:
    prev_sample: torch.Tensor
    log_prob: torch.Tensor  # (B,); NaN for a sample whose step is deterministic (eta 0)
    mean: torch.Tensor  # the Gaussian's mean, in the compute dtype (float64 off MPS)
    std: torch.Tensor  # (B,) sigma_t of each sample's step


def ddim_step_with_logprob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float | torch.Tensor,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step x_t -> x_{t-1}; returns ``(prev_sample, log_prob)`` with ``log_prob`` of shape (B,).

    ``timestep`` may be a scalar or one timestep per sample (DDPO trains on shuffled timesteps);
    ``eta`` a scalar or one per sample (an SDE-noise window sets it per step and sample).
    Pass ``prev_sample`` to score a given x_{t-1} instead of drawing one (the training-time mode).
    With ``eta == 0`` the step is deterministic and has no density: ``log_prob`` is NaN.
    """
    step = ddim_step_distribution(scheduler, model_output, timestep, sample, eta, generator, prev_sample)
    return step.prev_sample, step.log_prob


def ddim_step_distribution(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float | torch.Tensor,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
) -> DDIMStep:
    """:func:`ddim_step_with_logprob` with the step's Gaussian (mean, std) too: GRPO's KL to the
    reference policy compares two policies' means at the same x_t."""
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) before stepping")
    config = scheduler.config
    out_dtype = model_output.dtype
    compute = torch.float32 if sample.device.type == "mps" else torch.float64
    model_output, sample = model_output.to(compute), sample.to(compute)
    timestep = torch.as_tensor(timestep, device=sample.device)
    # eta on the host (a float, or a CPU tensor): which samples are stochastic is known without a GPU sync
    eta_host = torch.as_tensor(eta, dtype=torch.float64).cpu().reshape(-1)
    eta_host = eta_host.expand(sample.shape[0]) if eta_host.numel() == 1 else eta_host
    any_stochastic, all_stochastic = bool((eta_host > 0).any()), bool((eta_host > 0).all())
    per_sample_eta = eta_host.to(device=sample.device, dtype=compute)
    stochastic = eta_host > 0 if all_stochastic else (eta_host > 0).to(sample.device)

    alpha_prod_t, alpha_prod_t_prev = _alpha_products(scheduler, timestep, compute, stochastic=any_stochastic)
    alpha_prod_t = _broadcast(alpha_prod_t, sample)
    alpha_prod_t_prev = _broadcast(alpha_prod_t_prev, sample)
    if any_stochastic and not all_stochastic:  # a mixed batch: the deterministic samples' final alpha
        _, deterministic_prev = _alpha_products(scheduler, timestep, compute, stochastic=False)
        alpha_prod_t_prev = torch.where(
            _broadcast(stochastic, sample).bool(), alpha_prod_t_prev, _broadcast(deterministic_prev, sample)
        )
    beta_prod_t = 1 - alpha_prod_t

    if config.prediction_type == "epsilon":
        pred_original = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        pred_epsilon = model_output
    elif config.prediction_type == "sample":
        pred_original = model_output
        pred_epsilon = (sample - alpha_prod_t**0.5 * pred_original) / beta_prod_t**0.5
    elif config.prediction_type == "v_prediction":
        pred_original = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output
        pred_epsilon = alpha_prod_t**0.5 * model_output + beta_prod_t**0.5 * sample
    else:
        raise ValueError(f"unsupported prediction_type {config.prediction_type!r}")
    if config.thresholding:
        pred_original = scheduler._threshold_sample(pred_original)
    elif config.clip_sample:
        pred_original = pred_original.clamp(-config.clip_sample_range, config.clip_sample_range)

    # sigma_t of DDIM (eq. 16): eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
    variance = (1 - alpha_prod_t_prev) / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev)
    eta_factor = float(eta_host[0]) if bool((eta_host == eta_host[0]).all()) else _broadcast(per_sample_eta, sample)
    std_dev_t = eta_factor * variance**0.5
    # 0 in exact arithmetic at a zero-terminal-SNR schedule's first step (eta 1), -1e-16 after rounding
    direction = (1 - alpha_prod_t_prev - std_dev_t**2).clamp(min=0) ** 0.5 * pred_epsilon
    prev_mean = alpha_prod_t_prev**0.5 * pred_original + direction

    if prev_sample is None:
        if any_stochastic:  # one draw for the batch, as the pipeline's (keeps its noise stream)
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=out_dtype)
            prev_sample = prev_mean + std_dev_t * noise.to(compute)
        else:
            prev_sample = prev_mean
        # What is stored (and later replayed) is the sample in the model's dtype: score that one.
        prev_sample = prev_sample.to(out_dtype)

    log_prob = torch.full(sample.shape[:1], float("nan"), device=sample.device, dtype=torch.float32)
    if any_stochastic:
        # a deterministic sample's sigma_t is 0: give it 1 in the density and NaN as its log-prob
        std_safe = std_dev_t if all_stochastic else torch.where(std_dev_t > 0, std_dev_t, torch.ones_like(std_dev_t))
        target = prev_sample.detach().to(compute)
        density = -((target - prev_mean) ** 2) / (2 * std_safe**2) - torch.log(std_safe) - _LOG_SQRT_2PI
        density = density.mean(dim=tuple(range(1, density.ndim))).float()
        log_prob = density if all_stochastic else torch.where(stochastic, density, log_prob)
    std = torch.as_tensor(std_dev_t).expand_as(sample).reshape(sample.shape[0], -1)[:, 0]
    return DDIMStep(prev_sample, log_prob, prev_mean, std)
