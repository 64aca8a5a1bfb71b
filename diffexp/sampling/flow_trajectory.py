"""The trajectory sampler for flow-matching transformers (SD3/SD3.5, FLUX.1), with log-probabilities.

The DDIM sampler's loop, plan, recording and gradient mode (:class:`TrajectorySampler`), with the
parts that differ replaced: the flow-matching Euler schedule (set up as each pipeline sets it), the
transformer call, and the step, which is Flow-GRPO's SDE (:func:`flow_sde_step`) with the sampler's
``eta`` as its ``noise_level`` (0: diffusers' Euler ODE step, the pipeline's image). The step's
arithmetic runs in float64, as the DDIM step's, so that a replayed log-probability equals the
sampled one; the stored sample is the model dtype's, and that is the one scored.

The CFG scale of a plan means, per model: SD3 — true classifier-free guidance (the unconditional
branch is the empty prompt's, as its pipeline); FLUX.1-dev — the value of its distilled guidance
embedding (no unconditional branch, so a scale of 1 means weak guidance, not none); FLUX.1-schnell
has no guidance input and ignores the scale.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from diffexp.models.pipelines import model_family
from diffexp.sampling.conditioning import Conditioning
from diffexp.sampling.flow_sde import FlowStep, flow_sde_step
from diffexp.sampling.trajectory import TrajectorySampler


class FlowTrajectorySampler(TrajectorySampler):
    """Samples trajectories from an SD3/SD3.5 or FLUX.1 pipeline under a :class:`SamplingPlan`;
    ``eta`` is the SDE's noise level (Flow-GRPO: 0.7)."""

    def __init__(self, pipe, num_steps: int = 10, eta: float = 0.7, **kwargs):
        self.family = model_family(pipe)
        if self.family not in ("sd3", "flux"):
            raise ValueError(f"FlowTrajectorySampler needs an SD3 or FLUX pipeline, got {type(pipe).__name__}")
        self.pipe, self.num_steps = pipe, num_steps
        super().__init__(pipe, num_steps=num_steps, eta=eta, **kwargs)

    @property
    def denoiser(self):
        return self.pipe.transformer

    def make_scheduler(self):
        pipe, n = self.pipe, self.num_steps
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        latent_h = self.height // pipe.vae_scale_factor
        latent_w = self.width // pipe.vae_scale_factor
        if self.family == "flux":  # FluxPipeline.__call__: these sigmas, always shifted by mu
            sigmas = np.linspace(1.0, 1 / n, n)
            kwargs = {"sigmas": sigmas, "mu": self._mu((latent_h // 2) * (latent_w // 2), scheduler)}
        else:  # StableDiffusion3Pipeline.__call__: mu only with dynamic shifting (SD3.5)
            patch = self.denoiser.config.patch_size
            kwargs = {"num_inference_steps": n}
            if scheduler.config.get("use_dynamic_shifting", None):
                kwargs["mu"] = self._mu((latent_h // patch) * (latent_w // patch), scheduler)
        scheduler.set_timesteps(device=pipe._execution_device, **kwargs)
        # on the host, float64: the SDE step's arithmetic; sigma_max stands in for sigma = 1 (Flow-GRPO)
        self.sigmas = scheduler.sigmas.detach().cpu().double()
        self.sigma_max = float(self.sigmas[1]) if len(self.sigmas) > 2 else 0.5
        return scheduler

    @staticmethod
    def _mu(image_seq_len: int, scheduler) -> float:
        c = scheduler.config
        return calculate_shift(
            image_seq_len,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", 1.15),
        )

    # -- the model call -----------------------------------------------------------------------
    def noise_pred(
        self, latents, timestep, cond: Conditioning, uncond: Conditioning, guidance_scales, add_time_ids, guided=None
    ) -> torch.Tensor:
        """The velocity: SD3 with per-sample CFG (skipping the unconditional pass at scale 1), FLUX
        with the scale as its guidance embedding."""
        batch = latents.shape[0]
        t = timestep.expand(batch) if timestep.ndim == 0 else timestep
        if self.family == "flux":
            return self._flux_velocity(latents, t, cond, guidance_scales)
        if guided is None:
            guided = bool((guidance_scales != 1.0).any())
        if guided:  # the pipeline's layout: [unconditional, conditional]
            model_in, t = torch.cat([latents, latents]), torch.cat([t, t])
            embeds = torch.cat([uncond.embeds, cond.embeds])
            pooled = torch.cat([uncond.pooled, cond.pooled])
        else:
            model_in, embeds, pooled = latents, cond.embeds, cond.pooled
        out = self.denoiser(
            hidden_states=model_in,
            timestep=t,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        if not guided:
            return out
        out_uncond, out_cond = out.chunk(2)
        scale = guidance_scales.to(out.dtype).reshape(-1, *([1] * (out.ndim - 1)))
        return out_uncond + scale * (out_cond - out_uncond)

    def _flux_velocity(self, latents, t, cond: Conditioning, guidance_scales) -> torch.Tensor:
        transformer = self.denoiser
        guidance = guidance_scales.float() if transformer.config.guidance_embeds else None
        text_ids = torch.zeros(cond.embeds.shape[1], 3, device=latents.device, dtype=cond.embeds.dtype)
        return transformer(
            hidden_states=latents,
            timestep=t / 1000,
            guidance=guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.embeds,
            txt_ids=text_ids,
            img_ids=self._image_ids,
            return_dict=False,
        )[0]

    def initial_latents(self, batch, dtype, generator, latents):
        channels = self.denoiser.config.in_channels
        if self.family == "flux":  # packed 2x2 patches, and the image positions the transformer needs
            latents, self._image_ids = self.pipe.prepare_latents(
                batch, channels // 4, self.height, self.width, dtype, self.device, generator, latents
            )
            return latents
        return self.pipe.prepare_latents(
            batch, channels, self.height, self.width, dtype, self.device, generator, latents
        )

    def encode(self, plan):
        cond, uncond, _ = super().encode(plan)
        if self.family == "flux" and not hasattr(self, "_image_ids"):
            self.initial_latents(1, cond.embeds.dtype, None, None)  # a replay before any sampling
        return cond, uncond, None

    # -- the step -------------------------------------------------------------------------------
    def transition(self, model_output, step, latents, noise_levels, generator):
        sigma, sigma_next = float(self.sigmas[step]), float(self.sigmas[step + 1])
        velocity, sample = model_output.double(), latents.double()
        drawn = flow_sde_step(velocity, sigma, sigma_next, sample, noise_levels, self.sigma_max, generator=generator)
        prev_sample = drawn.prev_sample.to(latents.dtype)
        scored = flow_sde_step(
            velocity, sigma, sigma_next, sample, noise_levels, self.sigma_max, prev_sample=prev_sample.double().detach()
        )
        return prev_sample, self._nan_if_deterministic(scored.log_prob, noise_levels)

    def distribution(self, model_output, steps, latents, noise_levels, next_latents) -> FlowStep:
        host = steps.cpu()
        step = flow_sde_step(
            model_output.double(),
            self.sigmas[host],
            self.sigmas[host + 1],
            latents.double(),
            noise_levels,
            self.sigma_max,
            prev_sample=next_latents.double(),
        )
        return FlowStep(step.prev_sample, self._nan_if_deterministic(step.log_prob, noise_levels), step.mean, step.std)

    def kl_std(self, steps: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The scale of Flow-GRPO's KL term at ``steps``: the SDE's ``std_dev_t = s sqrt(sigma / (1 - sigma))``,
        the step's std without its ``sqrt(sigma - sigma_next)`` (``train_sd3.py`` divides the squared mean
        difference by ``2 std_dev_t^2``)."""
        host = torch.as_tensor(steps).cpu().reshape(-1)
        d_sigma = (self.sigmas[host] - self.sigmas[host + 1]).to(device=std.device, dtype=std.dtype)
        return std / d_sigma.sqrt()

    @staticmethod
    def _nan_if_deterministic(log_prob: torch.Tensor, noise_levels: torch.Tensor) -> torch.Tensor:
        """As the DDIM sampler: a step without noise has no density (its log-prob is NaN)."""
        stochastic = (torch.as_tensor(noise_levels).reshape(-1) > 0).to(log_prob.device)
        return torch.where(stochastic, log_prob.float(), torch.full_like(log_prob.float(), float("nan")))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode to images in [0, 1], as the pipeline's ``output_type="pt"`` does."""
        vae = self.pipe.vae
        if self.family == "flux":
            latents = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1)


def make_sampler(pipe, **kwargs) -> TrajectorySampler:
    """The sampler for ``pipe``'s family: DDIM for UNets, the flow SDE for SD3/FLUX."""
    family = model_family(pipe)
    return (FlowTrajectorySampler if family in ("sd3", "flux") else TrajectorySampler)(pipe, **kwargs)
