"""The sampling plan: what an exploration strategy decides before a batch is sampled."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingPlan:
    """Per-sample decisions for one batch.

    ``prompts`` are the original, unweighted texts: rewards are always computed on these.
    ``conditioning_prompts`` are what the model is conditioned on (possibly with ``(phrase)w``
    weights); ``guidance_scales`` has shape (batch, num_steps): the CFG scale of every step.
    ``noise_scales`` (same shape; default all 1) multiplies the sampler's noise (DDIM's eta, the flow
    SDE's noise level) at every step: 0 makes a step deterministic.
    """

    prompts: list[str]
    conditioning_prompts: list[str]
    guidance_scales: torch.Tensor
    phrase_weights: list[dict[str, float]] = field(default_factory=list)
    noise_scales: torch.Tensor | None = None

    def __post_init__(self):
        n = len(self.prompts)
        if len(self.conditioning_prompts) != n or self.guidance_scales.ndim != 2 or self.guidance_scales.shape[0] != n:
            raise ValueError(
                f"inconsistent plan: {n} prompts, {len(self.conditioning_prompts)} conditioning prompts, "
                f"guidance scales of shape {tuple(self.guidance_scales.shape)} (expected ({n}, num_steps))"
            )
        if not self.phrase_weights:
            self.phrase_weights = [{} for _ in range(n)]
        if self.noise_scales is None:
            self.noise_scales = torch.ones(self.guidance_scales.shape)
        elif self.noise_scales.shape != self.guidance_scales.shape:
            raise ValueError(
                f"noise scales of shape {tuple(self.noise_scales.shape)} do not match the guidance scales' "
                f"{tuple(self.guidance_scales.shape)}"
            )

    @property
    def num_steps(self) -> int:
        return self.guidance_scales.shape[1]

    def __len__(self) -> int:
        return len(self.prompts)
