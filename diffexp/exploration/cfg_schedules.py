"""Classifier-free-guidance schedules: per-sample, per-step CFG scales.

DiffExp's first strategy: a low CFG scale early in denoising lets samples of one prompt differ
in layout (diversity), and the base scale afterwards keeps them faithful to the prompt. The
paper's exact values are not public; the defaults here are this project's choices.

A value written as a pair ``[lo, hi]`` is drawn uniformly per sample, so ``low`` and
``fraction`` of ``low_then_base`` can themselves be random.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A fixed value, or a ``(low, high)`` range drawn uniformly per sample.
ValueOrRange = float | tuple[float, float]


def draw(value: ValueOrRange, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """One value per sample: a constant, or uniform in ``[low, high]``."""
    if isinstance(value, (int, float)):
        return torch.full((batch,), float(value))
    low, high = value
    return low + (high - low) * torch.rand(batch, generator=generator)


def _check_range(value: ValueOrRange, name: str, minimum: float = 0.0, maximum: float = float("inf")) -> ValueOrRange:
    values = [value] if isinstance(value, (int, float)) else list(value)
    if not isinstance(value, (int, float)) and values[0] > values[1]:
        raise ValueError(f"{name}: range [{values[0]}, {values[1]}] has low > high")
    for v in values:
        if not (minimum <= v <= maximum):
            raise ValueError(f"{name} must lie in [{minimum}, {maximum}], got {v}")
    return value


class CFGScheduleConfig(BaseModel):
    """How the CFG scale varies over steps and samples (``base`` comes from the strategy).

    kind:
      constant       every step uses ``base``
      low_then_base  the first ``fraction`` of steps use ``low``, the rest ``base`` (DiffExp's schedule)
      linear         ramps linearly from ``start`` at the first step to ``end`` at the last
      random         one scale per sample drawn from ``scale_range``, constant over steps
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["constant", "low_then_base", "linear", "random"] = "low_then_base"
    low: ValueOrRange = Field((1.0, 2.5), description="CFG scale of the early steps (low_then_base)")
    fraction: ValueOrRange = Field((0.2, 0.5), description="share of the steps, from the first, that use `low`")
    start: float = Field(1.0, description="first-step scale (linear)")
    end: float | None = Field(None, description="last-step scale (linear); default: the base scale")
    scale_range: tuple[float, float] = Field((1.0, 7.5), description="per-sample scale range (random)")

    @field_validator("low", "start", "end", "scale_range")
    @classmethod
    def _non_negative(cls, v, info):
        return v if v is None else _check_range(v, info.field_name)

    @field_validator("fraction")
    @classmethod
    def _unit_interval(cls, v, info):
        return _check_range(v, info.field_name, 0.0, 1.0)


def guidance_scales(
    config: CFGScheduleConfig, base: float, batch: int, num_steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The (batch, num_steps) CFG scales that ``config`` prescribes around the base scale."""
    if config.kind == "constant":
        return torch.full((batch, num_steps), float(base))
    if config.kind == "low_then_base":
        low = draw(config.low, batch, generator)
        num_low = torch.round(draw(config.fraction, batch, generator) * num_steps).long()
        early = torch.arange(num_steps).unsqueeze(0) < num_low.unsqueeze(1)
        return torch.where(early, low.unsqueeze(1), torch.full((batch, num_steps), float(base)))
    if config.kind == "linear":
        end = base if config.end is None else config.end
        ramp = torch.linspace(0.0, 1.0, num_steps) if num_steps > 1 else torch.zeros(1)
        return (config.start + (end - config.start) * ramp).unsqueeze(0).expand(batch, -1).clone()
    if config.kind == "random":
        return draw(config.scale_range, batch, generator).unsqueeze(1).expand(-1, num_steps).clone()
    raise ValueError(f"unknown CFG schedule {config.kind!r}")
