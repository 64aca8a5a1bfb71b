"""Two exploration knobs from the flow-GRPO literature, as per-step windows.

SDE-noise window: the sampler's noise (DDIM's eta, the flow SDE's noise level) only on a window of
steps; the other steps are deterministic (ODE) steps, which cost a UNet call but give no policy
gradient. Flow-GRPO-Fast, Flow-GRPO-S1, TempFlow-GRPO and MixGRPO report that noise on few, early steps explores
as well as noise on all of them, for a fraction of the training cost (only noisy steps are trained);
MixGRPO slides the window over training. Here the window is of a given width at a random start per
sample inside a range (Flow-GRPO-Fast's default: 3 of 10 steps within the first half), or the whole range.

Guidance in a limited interval (Kynkäänniemi et al., 2024): CFG only on a window of steps, the
conditional prediction alone (scale 1) elsewhere; guidance at high noise mostly removes diversity.
Their intervals are noise levels of EDM2; as shares of the sampling steps they do not transfer, so
the defaults here are this project's choice and say so.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _steps_in(window: tuple[float, float], num_steps: int) -> tuple[int, int]:
    """Step indices [first, stop) of a window given as shares of the steps (0 = the noisiest step)."""
    first = min(num_steps - 1, int(round(window[0] * num_steps)))
    return first, max(first + 1, int(round(window[1] * num_steps)))


def _unit_window(value: tuple[float, float], name: str) -> tuple[float, float]:
    start, end = value
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"{name} must satisfy 0 <= start < end <= 1, got {list(value)}")
    return value


class NoiseWindowConfig(BaseModel):
    """Which steps are stochastic (strategy ``sde_window``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window: tuple[float, float] = Field(
        (0.0, 0.5),
        description="shares of the steps, from the first (noisiest), where the noisy steps may lie (Flow-GRPO-Fast's "
        "sde_window_range (0, num_steps // 2))",
    )
    width: float | None = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="a window of this share of the steps at a random start inside `window`, drawn per sample "
        "(Flow-GRPO-Fast: sde_window_size 3 of 10 steps); None: all of `window`",
    )
    outside: float = Field(0.0, ge=0.0, le=1.0, description="noise scale outside the window (0: ODE steps)")

    @field_validator("window")
    @classmethod
    def _ordered(cls, v):
        return _unit_window(v, "window")

    @model_validator(mode="after")
    def _fits(self):
        if self.width is not None and self.width > self.window[1] - self.window[0] + 1e-9:
            raise ValueError(f"width {self.width} is wider than the window {list(self.window)}")
        return self


def window_starts(config: NoiseWindowConfig, num_steps: int) -> list[tuple[int, int]]:
    """Every (first step, length) of a noisy window that :func:`noise_scales` can draw."""
    first, stop = _steps_in(config.window, num_steps)
    if config.width is None:
        return [(first, stop - first)]
    length = max(1, min(stop - first, int(round(config.width * num_steps))))
    return [(start, length) for start in range(first, stop - length + 1)]


def noise_scales(
    config: NoiseWindowConfig, batch: int, num_steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, num_steps) multipliers of the sampler's noise: 1 inside each sample's window."""
    first, stop = _steps_in(config.window, num_steps)
    starts = torch.full((batch,), first)
    length = stop - first
    if config.width is not None:
        length = max(1, min(stop - first, int(round(config.width * num_steps))))
        starts = first + torch.randint(0, stop - first - length + 1, (batch,), generator=generator)
    steps = torch.arange(num_steps).unsqueeze(0)
    inside = (steps >= starts.unsqueeze(1)) & (steps < starts.unsqueeze(1) + length)
    return torch.where(inside, 1.0, config.outside).float()


class GuidanceIntervalConfig(BaseModel):
    """Where CFG acts (strategy ``guidance_interval``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    interval: tuple[float, float] = Field(
        (0.3, 1.0),
        description="shares of the steps, from the first (noisiest), with guidance; scale 1 elsewhere (this "
        "project's default: none on the noisiest 30%, where Kynkaanniemi et al. 2024 find guidance harmful)",
    )

    @field_validator("interval")
    @classmethod
    def _ordered(cls, v):
        return _unit_window(v, "interval")


def limit_guidance(config: GuidanceIntervalConfig, scales: torch.Tensor) -> torch.Tensor:
    """``scales`` (batch, num_steps) inside the interval, 1 (no guidance) outside it."""
    first, stop = _steps_in(config.interval, scales.shape[1])
    inside = torch.zeros(scales.shape[1], dtype=torch.bool)
    inside[first:stop] = True
    return torch.where(inside.unsqueeze(0), scales, torch.ones_like(scales))
