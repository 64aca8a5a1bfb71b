"""Random prompt weighting: DiffExp's second strategy.

Weighting a phrase of the prompt (w >= 1 strengthens it, w < 1 weakens it, as compel defines)
pushes samples toward variations the plain prompt rarely yields, surfacing strong reward
signals. Phrases come from structured prompts ("a {animal} {activity}" knows its two phrases)
or, for free text, from the documented rule in :func:`diffexp.prompts.weighting.split_phrases`.
The defaults are this project's choices; the paper's exact values are not public.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffexp.exploration.cfg_schedules import ValueOrRange, _check_range, draw
from diffexp.prompts.base import PromptLike
from diffexp.prompts.weighting import split_phrases, weight_phrases


class PhraseWeightingConfig(BaseModel):
    """Which phrases get weighted, and by how much."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_phrases: int = Field(1, ge=1, description="phrases weighted per sample (fewer if the prompt has fewer)")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="chance that a sample is weighted at all")
    weight: ValueOrRange = Field((1.0, 1.5), description="weight, or [low, high] drawn uniformly per phrase")

    @field_validator("weight")
    @classmethod
    def _weight_range(cls, v):
        return _check_range(v, "weight", 0.0, 10.0)


def phrases_of(prompt: PromptLike) -> list[str]:
    """The prompt's known phrases, or the free-text rule's, that occur verbatim in its text.

    (A prompt that already carries weighting syntax may split into phrases that its raw text
    spells differently; those cannot be wrapped and are skipped.)
    """
    candidates = prompt.phrases if prompt.phrases else split_phrases(prompt.text)
    return [phrase for phrase in candidates if phrase in prompt.text]


def draw_phrase_weights(
    config: PhraseWeightingConfig, prompt: PromptLike, generator: torch.Generator | None
) -> dict[str, float]:
    """Choose up to ``num_phrases`` phrases of one prompt at random and draw a weight for each."""
    candidates = phrases_of(prompt)
    if not candidates or torch.rand(1, generator=generator).item() >= config.probability:
        return {}
    order = torch.randperm(len(candidates), generator=generator)[: config.num_phrases]
    weights = draw(config.weight, len(order), generator)
    # Rounded as written into the prompt text, so the record equals what was sampled.
    return {candidates[int(i)]: round(float(w), 4) for i, w in zip(order, weights)}


def apply_phrase_weights(text: str, weights: dict[str, float]) -> str:
    return weight_phrases(text, weights) if weights else text
