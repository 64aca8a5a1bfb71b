"""The structured prompt type shared by prompt sets and exploration strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class PromptLike(Protocol):
    """Anything with a text and, optionally, its known phrases (e.g. ``("monkey", "washing the dishes")``)."""

    text: str
    phrases: tuple[str, ...] | None


@dataclass(frozen=True)
class Prompt:
    """A prompt whose phrases are known (structured sets) or ``None`` (free text: split by rule)."""

    text: str
    phrases: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for phrase in self.phrases or ():
            if phrase not in self.text:
                raise ValueError(f"phrase {phrase!r} is not part of prompt {self.text!r}")


def as_prompt(prompt: str | PromptLike) -> PromptLike:
    """Accept plain strings wherever prompts are expected."""
    if isinstance(prompt, str):
        return Prompt(prompt)
    if isinstance(prompt, PromptLike):
        return prompt
    raise TypeError(f"expected a prompt string or an object with .text and .phrases, got {type(prompt).__name__}")


def prompt_texts(prompts: Sequence[str | PromptLike]) -> list[str]:
    return [as_prompt(p).text for p in prompts]
