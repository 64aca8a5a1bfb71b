"""Exploration strategies: turn (prompts, random generator) into a :class:`SamplingPlan`.

The four arms of the DiffExp ablation, and the two knobs of the flow-GRPO literature, are one
class with optional parts:

=================  ===========================  =====================  ==========================
strategy           CFG scale                    prompt                 sampler noise
=================  ===========================  =====================  ==========================
baseline           fixed ``guidance``           as given               every step
cfg                scheduled                    as given               every step
phrase             fixed ``guidance``           random phrase weights  every step
diffexp            scheduled                    random phrase weights  every step
sde_window         fixed ``guidance``           as given               only in ``noise_window``
guidance_interval  ``guidance`` in an interval  as given               every step
=================  ===========================  =====================  ==========================

Strategies register by name; add your own with :func:`register_strategy` (a factory taking
an :class:`ExplorationConfig` and returning any object with a ``plan`` method).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffexp.exploration.cfg_schedules import CFGScheduleConfig, guidance_scales
from diffexp.exploration.phrase_weighting import PhraseWeightingConfig, apply_phrase_weights, draw_phrase_weights
from diffexp.exploration.step_windows import GuidanceIntervalConfig, NoiseWindowConfig, limit_guidance, noise_scales
from diffexp.prompts.base import PromptLike, as_prompt
from diffexp.prompts.weighting import plain_text
from diffexp.registry import Registry
from diffexp.sampling.plan import SamplingPlan


class ExplorationConfig(BaseModel):
    """Which strategy explores, and its parameters (unused parts are ignored by a strategy)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: str = Field(
        "baseline", description="baseline, cfg, phrase, diffexp, sde_window, guidance_interval, or a registered name"
    )
    guidance_scale: float = Field(5.0, ge=0.0, description="base CFG scale (ddpo-pytorch's default is 5.0)")
    cfg: CFGScheduleConfig = Field(default_factory=CFGScheduleConfig)
    phrase: PhraseWeightingConfig = Field(default_factory=PhraseWeightingConfig)
    noise_window: NoiseWindowConfig = Field(default_factory=NoiseWindowConfig)
    guidance_interval: GuidanceIntervalConfig = Field(default_factory=GuidanceIntervalConfig)

    @field_validator("strategy")
    @classmethod
    def _known(cls, v):
        return STRATEGIES.check(v)


class ExplorationStrategy(Protocol):
    def plan(
        self, prompts: Sequence[str | PromptLike], num_steps: int, generator: torch.Generator | None
    ) -> SamplingPlan: ...


class ScheduledWeightedStrategy:
    """A CFG schedule (or a fixed scale), optionally limited to an interval of steps, plus optional
    random phrase weighting and an optional window of noisy steps."""

    def __init__(
        self,
        guidance_scale: float,
        schedule: CFGScheduleConfig | None,
        phrase: PhraseWeightingConfig | None,
        noise_window: NoiseWindowConfig | None = None,
        guidance_interval: GuidanceIntervalConfig | None = None,
    ):
        self.guidance_scale = guidance_scale
        self.schedule = schedule or CFGScheduleConfig(kind="constant")
        self.phrase = phrase
        self.noise_window = noise_window
        self.guidance_interval = guidance_interval

    def plan(
        self, prompts: Sequence[str | PromptLike], num_steps: int, generator: torch.Generator | None = None
    ) -> SamplingPlan:
        items = [as_prompt(p) for p in prompts]
        scales = guidance_scales(self.schedule, self.guidance_scale, len(items), num_steps, generator)
        if self.guidance_interval is not None:
            scales = limit_guidance(self.guidance_interval, scales)
        weights = [draw_phrase_weights(self.phrase, p, generator) if self.phrase else {} for p in items]
        noise = None if self.noise_window is None else noise_scales(self.noise_window, len(items), num_steps, generator)
        return SamplingPlan(
            prompts=[plain_text(p.text) for p in items],
            conditioning_prompts=[apply_phrase_weights(p.text, w) for p, w in zip(items, weights)],
            guidance_scales=scales,
            phrase_weights=weights,
            noise_scales=noise,
        )


STRATEGIES: Registry[Callable[[ExplorationConfig], ExplorationStrategy]] = Registry("exploration strategy")


def register_strategy(name: str, *, label: str | None = None, colour: str | None = None, order: float | None = None):
    """Decorator: ``@register_strategy("mine", label="Mine", colour="#123456")`` on a factory
    ``(ExplorationConfig) -> strategy``; the label and colour are how reports show it."""
    return STRATEGIES.register(name, label=label, colour=colour, order=order)


register_strategy("baseline", label="Baseline", colour="#6b6b6b")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, None, None)
)
register_strategy("cfg", label="CFG only", colour="#1f77b4")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, c.cfg, None)
)
register_strategy("phrase", label="Phrase only", colour="#ff7f0e")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, None, c.phrase)
)
register_strategy("diffexp", label="DiffExp", colour="#d62728")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, c.cfg, c.phrase)
)
register_strategy("sde_window", label="SDE-noise window", colour="#2ca02c")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, None, None, noise_window=c.noise_window)
)
register_strategy("guidance_interval", label="Guidance interval", colour="#9467bd")(
    lambda c: ScheduledWeightedStrategy(c.guidance_scale, None, None, guidance_interval=c.guidance_interval)
)


def build_strategy(config: ExplorationConfig | dict | str) -> ExplorationStrategy:
    """A strategy from its config (or just its name, with default parameters)."""
    if isinstance(config, str):
        config = ExplorationConfig(strategy=config)
    elif isinstance(config, dict):
        config = ExplorationConfig(**config)
    return STRATEGIES[config.strategy](config)
