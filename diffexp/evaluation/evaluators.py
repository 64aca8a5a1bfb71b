"""Evaluators: extra held-out metrics computed from the evaluation samples, registered by name.

An evaluator is a callable ``(images, prompts) -> {metric name: value}`` (images in [0, 1], the
original prompts). A world registers the evaluators its prompts can be judged by, e.g. a ground
truth that measures real prompt following, and may name the prompt sets they apply to: a run on
such a prompt set uses them without being told (``run.evaluators`` adds more by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from diffexp.registry import Registry


class Evaluator(Protocol):
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]: ...


#: name -> factory returning an evaluator; ``extra``: the prompt sets that use it by default and
#: the metric names it declares (None: not declared)
EVALUATORS: Registry[Callable[[], Evaluator]] = Registry("evaluator")


def register_evaluator(name: str, prompt_sets: tuple[str, ...] = (), metrics: tuple[str, ...] | None = None):
    """Decorator registering an evaluator factory; ``prompt_sets`` use it by default; ``metrics``
    declares the names it returns (so a study's objective can be checked before anything runs)."""
    declared = tuple(metrics) if metrics is not None else None
    return EVALUATORS.register(name, prompt_sets=tuple(prompt_sets), metrics=declared)


def evaluator_names() -> list[str]:
    """Every registered evaluator, plugins' included."""
    return EVALUATORS.names()


def build_evaluator(name: str) -> Evaluator:
    return EVALUATORS[name]()


def evaluators_for_prompt_set(prompt_set: str) -> list[str]:
    """The evaluators registered as defaults for ``prompt_set``, in registration order."""
    return [e.name for e in EVALUATORS.entries() if prompt_set in e.extra["prompt_sets"]]


def evaluator_metrics(name: str) -> tuple[str, ...] | None:
    """The metric names evaluator ``name`` declared (None: it did not declare them)."""
    return EVALUATORS.entry(name).extra["metrics"]
