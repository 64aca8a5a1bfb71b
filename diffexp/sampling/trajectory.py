"""The trajectory sampler shared by DDPO and AlignProp.

It composes the pipeline's parts (text encoders via :class:`PromptEncoder`, the UNet, a DDIM
scheduler, the VAE) instead of copying ``pipeline.__call__``, and records everything needed to
replay a step during training: every latent, the per-step log-probabilities, the timesteps, the
exact prompt embeddings used (after any weighting), the unconditional embeddings and the
per-sample, per-step CFG scale. DDPO replays steps with :meth:`TrajectorySampler.step_log_prob`;
AlignProp samples with ``grad_steps`` so gradients flow through chosen steps only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from torch.utils.checkpoint import checkpoint

from diffexp.sampling.conditioning import Conditioning, PromptEncoder
from diffexp.sampling.ddim import DDIMStep, ddim_step_distribution, ddim_step_with_logprob
from diffexp.sampling.plan import SamplingPlan


@dataclass
class Trajectory:
    """A batch of sampled denoising chains. Tensors are indexed by sample first.

    latents:          (B, T+1, C, h, w)  x_T ... x_0, detached
    log_probs:        (B, T)             log pi(x_{t-1} | x_t) at sampling time (NaN if eta = 0)
    timesteps:        (T,)               the scheduler's timesteps
    guidance_scales:  (B, T)             CFG scale used at every step
    noise_levels:     (B, T)             the noise of every step (DDIM's eta; flow: the SDE's noise level),
                                         on the host; 0 marks a deterministic step (no log-prob)
    sigmas:           (T+1,)             flow models: the noise levels sigma of the schedule, else None
    cond / uncond:    text conditioning used for the conditional / unconditional CFG branch
    add_time_ids:     (B, 6) SDXL micro-conditioning, else None
    images:           (B, 3, H, W) in [0, 1] if decoded (carries gradient in gradient mode)
    """

    prompts: list[str]
    conditioning_prompts: list[str]
    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    guidance_scales: torch.Tensor
    cond: Conditioning
    uncond: Conditioning
    add_time_ids: torch.Tensor | None = None
    images: torch.Tensor | None = None
    phrase_weights: list[dict[str, float]] = field(default_factory=list)
    noise_levels: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None

    #: fields that describe the schedule, not a sample (not indexed by ``select``, not concatenated)
    SHARED = ("timesteps", "sigmas")

    def __len__(self) -> int:
        return len(self.prompts)

    def stochastic_steps(self) -> torch.Tensor:
        """(B, T) bool on the host: the steps that drew noise, the only ones with a log-probability."""
        return self.noise_levels > 0

    def select(self, index: torch.Tensor | list[int] | slice) -> Trajectory:
        """The sub-batch ``index`` (a tensor/list of sample indices, or a slice)."""
        if isinstance(index, slice):
            positions = list(range(len(self)))[index]
        else:
            positions = [int(i) for i in index]
        idx = torch.tensor(positions, dtype=torch.long)
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in Trajectory.SHARED or value is None:
                values[f.name] = value
            elif isinstance(value, list):
                values[f.name] = [value[i] for i in positions] if value else []
            else:
                values[f.name] = value[idx.to(_device_of(value))]
        return Trajectory(**values)


def _device_of(value) -> torch.device:
    return value.embeds.device if isinstance(value, Conditioning) else value.device


class TrajectorySampler:
    """Samples trajectories from a SD 1.x/2.x or SDXL pipeline under a :class:`SamplingPlan`."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        num_steps: int = 20,
        eta: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        gradient_checkpointing: bool = True,
        negative_prompt: str | None = None,
        on_step=None,
    ):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.pipe = pipe
        self.encoder = PromptEncoder(pipe)
        self.num_steps, self.eta = num_steps, eta
        size = getattr(self.denoiser.config, "sample_size", None) or pipe.default_sample_size  # FLUX: the pipeline's
        default = size * pipe.vae_scale_factor
        self.height, self.width = height or default, width or default
        self.gradient_checkpointing = gradient_checkpointing
        self.negative_prompt = negative_prompt
        self.on_step = on_step  # called before every step (a training checks for a stop request)
        # Our own scheduler instance: the pipeline's stays untouched, and set_timesteps is done once.
        self.scheduler = self.make_scheduler()

    def make_scheduler(self):
        scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(self.num_steps, device=self.pipe._execution_device)
        return scheduler

    @property
    def denoiser(self):
        """The network that predicts noise (a UNet here; a flow model's transformer in its sampler)."""
        return self.pipe.unet

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    # -- the model call -----------------------------------------------------------------------
    def noise_pred(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: Conditioning,
        uncond: Conditioning,
        guidance_scales: torch.Tensor,
        add_time_ids: torch.Tensor | None,
        guided: bool | None = None,
    ) -> torch.Tensor:
        """Classifier-free-guided noise prediction with one guidance scale per sample.

        ``guided`` (any scale != 1) may be given by a caller that knows it without reading the
        scales back from the GPU (a read-back each step stalls the launch queue).
        """
        if guided is None:
            guided = bool((guidance_scales != 1.0).any())
        if guided:  # the pipeline's layout: [unconditional, conditional]
            model_in = torch.cat([latents, latents])
            embeds = torch.cat([uncond.embeds, cond.embeds])
            pooled = None if cond.pooled is None else torch.cat([uncond.pooled, cond.pooled])
            time_ids = None if add_time_ids is None else torch.cat([add_time_ids, add_time_ids])
            t = timestep if timestep.ndim == 0 else torch.cat([timestep, timestep])
        else:  # CFG scale 1 is the conditional prediction alone: skip the unconditional pass
            model_in, embeds, pooled, time_ids, t = latents, cond.embeds, cond.pooled, add_time_ids, timestep
        model_in = self.scheduler.scale_model_input(model_in, timestep)
        added = None if pooled is None else {"text_embeds": pooled, "time_ids": time_ids}
        out = self.denoiser(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]
        if not guided:
            return out
        out_uncond, out_cond = out.chunk(2)
        scale = guidance_scales.to(out.dtype).reshape(-1, *([1] * (out.ndim - 1)))
        return out_uncond + scale * (out_cond - out_uncond)

    # -- sampling -----------------------------------------------------------------------------
    def encode(self, plan: SamplingPlan) -> tuple[Conditioning, Conditioning, torch.Tensor | None]:
        cond = self.encoder.encode(plan.conditioning_prompts)
        uncond = self.encoder.negative(len(plan), self.negative_prompt)
        time_ids = self.encoder.add_time_ids(len(plan), self.height, self.width, cond.embeds.dtype)
        return cond, uncond, time_ids

    def sample(
        self,
        plan: SamplingPlan,
        generator: torch.Generator | None = None,
        grad_steps: torch.Tensor | None = None,
        decode: bool = True,
        latents: torch.Tensor | None = None,
    ) -> Trajectory:
        """Sample one trajectory per plan entry.

        ``grad_steps`` (bool, shape (T,) or (B, T)) marks the steps through which gradients flow
        (AlignProp's truncated backpropagation). Steps not marked run without autograd, or, when
        other samples of the batch need the step, have their output detached. A sample's marked
        steps must be a contiguous suffix for truncation to mean "the last K steps".
        ``None`` samples entirely without gradients.
        """
        if plan.num_steps != self.num_steps:
            raise ValueError(f"plan has {plan.num_steps} steps, sampler has {self.num_steps}")
        batch = len(plan)
        grad_mask = self._grad_mask(grad_steps, batch)  # on the host, read per step without a GPU sync
        if grad_mask is not None:
            grad_any, grad_all = grad_mask.any(dim=0).tolist(), grad_mask.all(dim=0).tolist()
        with torch.no_grad():
            cond, uncond, time_ids = self.encode(plan)
            latents = self.initial_latents(batch, cond.embeds.dtype, generator, latents)
        guided_steps = (plan.guidance_scales != 1.0).any(dim=0).tolist()  # on the host: no GPU sync per step
        scales = plan.guidance_scales.to(self.device)
        etas = (self.eta * plan.noise_scales).cpu()  # per sample and step, on the host
        all_latents, all_log_probs = [latents.detach()], []
        # Gradient checkpointing per UNet block (diffusers' own, active only on steps with
        # gradient): backward then holds one block's activations at a time, where checkpointing
        # the whole UNet call would hold all of them while it recomputes.
        per_block = grad_mask is not None and self.gradient_checkpointing and self._supports_block_checkpointing()
        switch_on = per_block and not getattr(self.denoiser, "is_gradient_checkpointing", False)
        if switch_on:
            self.denoiser.enable_gradient_checkpointing()
        try:
            for i, t in enumerate(self.scheduler.timesteps):
                if self.on_step is not None:
                    self.on_step()
                step_grad = grad_mask is not None and grad_any[i]
                with torch.set_grad_enabled(step_grad):
                    args = (latents, t, cond, uncond, scales[:, i], time_ids, guided_steps[i])
                    if step_grad and self.gradient_checkpointing and not per_block:
                        noise = checkpoint(self.noise_pred, *args, use_reentrant=False)
                    else:
                        noise = self.noise_pred(*args)
                    next_latents, log_prob = self.transition(noise, i, latents, etas[:, i], generator)
                    if step_grad and not grad_all[i]:
                        keep = grad_mask[:, i].to(self.device).reshape(-1, *([1] * (latents.ndim - 1)))
                        next_latents = torch.where(keep, next_latents, next_latents.detach())
                latents = next_latents
                all_latents.append(latents.detach())
                all_log_probs.append(log_prob.detach())
        finally:
            if switch_on:
                self.denoiser.disable_gradient_checkpointing()

        images = None
        if decode:
            with torch.set_grad_enabled(grad_mask is not None and bool(grad_mask.any())):
                images = self.decode(latents)
        return Trajectory(
            prompts=list(plan.prompts),
            conditioning_prompts=list(plan.conditioning_prompts),
            latents=torch.stack(all_latents, dim=1),
            log_probs=torch.stack(all_log_probs, dim=1),
            timesteps=self.scheduler.timesteps.clone(),
            guidance_scales=scales,
            cond=cond,
            uncond=uncond,
            add_time_ids=time_ids,
            images=images,
            phrase_weights=list(plan.phrase_weights),
            noise_levels=etas,
            sigmas=self.sigmas,
        )

    #: the schedule's noise levels (flow models), recorded with the trajectory; None for DDIM
    sigmas: torch.Tensor | None = None

    def transition(
        self, model_output: torch.Tensor, step: int, latents: torch.Tensor, noise_levels: torch.Tensor, generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step`` of the chain from ``latents``: the next latents and their log-probabilities."""
        t = self.scheduler.timesteps[step]
        return ddim_step_with_logprob(self.scheduler, model_output, t, latents, noise_levels, generator)

    def initial_latents(self, batch: int, dtype: torch.dtype, generator, latents: torch.Tensor | None) -> torch.Tensor:
        """x_T as the pipeline draws it (``latents``, if given, are used as they are)."""
        channels = self.denoiser.config.in_channels
        return self.pipe.prepare_latents(
            batch, channels, self.height, self.width, dtype, self.device, generator, latents
        )

    def _supports_block_checkpointing(self) -> bool:
        return bool(getattr(self.denoiser, "_supports_gradient_checkpointing", False)) and hasattr(
            self.denoiser, "enable_gradient_checkpointing"
        )

    def _grad_mask(self, grad_steps: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if grad_steps is None:
            return None
        mask = torch.as_tensor(grad_steps, dtype=torch.bool, device="cpu")
        if mask.ndim == 1:
            mask = mask.unsqueeze(0).expand(batch, -1)
        if mask.shape != (batch, self.num_steps):
            raise ValueError(
                f"grad_steps must have shape ({self.num_steps},) or ({batch}, {self.num_steps}), got "
                f"{tuple(mask.shape)}"
            )
        return mask

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode latents to images in [0, 1], as the pipeline's ``output_type="pt"`` does."""
        vae = self.pipe.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            latents = latents * torch.tensor(std).view(shape).to(latents) / vae.config.scaling_factor + torch.tensor(
                mean
            ).view(shape).to(latents)
        else:
            latents = latents / vae.config.scaling_factor
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1)

    # -- replay (DDPO training) -------------------------------------------------------------
    def step_log_prob(self, traj: Trajectory, step_index: torch.Tensor | int) -> torch.Tensor:
        """log pi_theta(x_{t-1} | x_t) of the recorded transition at ``step_index`` (one per sample).

        Uses the recorded embeddings and CFG scales, so the policy that is evaluated is the one
        that sampled (exploration included). Differentiable with respect to the UNet.
        """
        return self.step_distribution(traj, step_index).log_prob

    def step_distribution(self, traj: Trajectory, step_index: torch.Tensor | int) -> DDIMStep:
        """The recorded transition's Gaussian under the current weights: log-prob, mean and std."""
        batch = len(traj)
        steps = torch.as_tensor(step_index, dtype=torch.long, device=traj.latents.device)
        if steps.ndim == 0:
            steps = steps.expand(batch)
        rows = torch.arange(batch, device=traj.latents.device)
        latents, next_latents = traj.latents[rows, steps], traj.latents[rows, steps + 1]
        timesteps = traj.timesteps.to(steps.device)[steps]
        scales = traj.guidance_scales.to(steps.device)[rows, steps]
        etas = traj.noise_levels[rows.cpu(), steps.cpu()]
        noise = self.noise_pred(latents, timesteps, traj.cond, traj.uncond, scales, traj.add_time_ids)
        return self.distribution(noise, steps, latents, etas, next_latents)

    def kl_std(self, steps: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The scale of GRPO's KL term: on DDIM the step's own std (Flow-GRPO's form, the squared mean
        difference over ``2 std^2``, is then the exact Gaussian KL; a flow sampler drops the step size)."""
        return std

    def distribution(self, model_output, steps, latents, noise_levels, next_latents) -> DDIMStep:
        """The Gaussian of the steps ``steps`` (one per sample) from ``latents``, scoring ``next_latents``."""
        timesteps = self.scheduler.timesteps.to(steps.device)[steps]
        return ddim_step_distribution(
            self.scheduler, model_output, timesteps, latents, noise_levels, prev_sample=next_latents
        )
