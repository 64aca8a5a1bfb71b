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

from diffexp.plugins import load_plugins


class Evaluator(Protocol):
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]: ...


#: name -> factory returning an evaluator
EVALUATORS: dict[str, Callable[[], Evaluator]] = {}
#: prompt-set name -> evaluator names used by default on that set
_DEFAULTS: dict[str, list[str]] = {}
#: evaluator name -> the metric names it returns (None: not declared)
_METRICS: dict[str, tuple[str, ...] | None] = {}


def register_evaluator(name: str, prompt_sets: tuple[str, ...] = (), metrics: tuple[str, ...] | None = None):
    """Decorator registering an evaluator factory; ``prompt_sets`` use it by default; ``metrics``
    declares the names it returns (so a study's objective can be checked before anything runs)."""

    def decorate(factory):
        if name in EVALUATORS:
            raise ValueError(f"evaluator {name!r} is already registered")
        EVALUATORS[name] = factory
        _METRICS[name] = tuple(metrics) if metrics is not None else None
        for prompt_set in prompt_sets:
            _DEFAULTS.setdefault(prompt_set, []).append(name)
        return factory

    return decorate


def evaluator_names() -> list[str]:
    """Every registered evaluator, plugins' included."""
    load_plugins()
    return sorted(EVALUATORS)


def build_evaluator(name: str) -> Evaluator:
    load_plugins()
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; registered: {sorted(EVALUATORS)}")
    return EVALUATORS[name]()


def evaluators_for_prompt_set(prompt_set: str) -> list[str]:
    """The evaluators registered as defaults for ``prompt_set``."""
    load_plugins()
    return list(_DEFAULTS.get(prompt_set, []))


def evaluator_metrics(name: str) -> tuple[str, ...] | None:
    """The metric names evaluator ``name`` declared (None: it did not declare them)."""
    load_plugins()
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; registered: {sorted(EVALUATORS)}")
    return _METRICS.get(name)
