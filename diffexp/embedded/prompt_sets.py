"""Prompt sets of the embedded world, mirroring the paper's DDPO-style sets.

- "objects" (like DDPO's 45 animals): single-object prompts, every colour x shape;
  ``heldout`` = ``scenes.HELDOUT_OBJECTS``, ``train`` = the rest.
- "relations" (like animals x activities): two objects in a spatial relation.
  ``train``: for every seen object A and every relation, one partner B chosen by a
  fixed cyclic rule (the first of A's colour/shape successors, stepping both indices
  by 1 + relation index, that differs from A in colour and shape and keeps the prompt
  out of the held-out sets); ``heldout``: every pair of ``scenes.HELDOUT_PAIRS`` in
  every relation, i.e. pairs whose objects are seen but never together in training.

Every prompt carries its object phrases (for phrase-weighted exploration) and its
labels (for the evaluator).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from diffexp.embedded.scenes import (
    COLOURS,
    HELDOUT_OBJECTS,
    HELDOUT_PAIRS,
    RELATIONS,
    SHAPES,
    ObjectLabel,
    SceneLabels,
    caption,
    is_heldout,
    phrases,
)

PROMPT_SETS: tuple[str, ...] = ("objects", "relations")
SPLITS: tuple[str, ...] = ("train", "heldout")


@dataclass(frozen=True)
class WorldPrompt:
    """A prompt, its object phrases (substrings of ``text``) and its ground-truth labels."""

    text: str
    phrases: tuple[str, ...]
    labels: SceneLabels


def _prompt(labels: SceneLabels) -> WorldPrompt:
    return WorldPrompt(caption(labels), phrases(labels), labels)


def _all_objects() -> list[ObjectLabel]:
    return [ObjectLabel(c, s) for c in COLOURS for s in SHAPES]


def _objects(split: str) -> list[SceneLabels]:
    heldout = split == "heldout"
    return [SceneLabels((o,)) for o in _all_objects() if (o in HELDOUT_OBJECTS) == heldout]


def _partner(first: ObjectLabel, relation_index: int) -> ObjectLabel:
    """The cyclic-rule partner of ``first`` for one relation (see the module docstring)."""
    ci, si = COLOURS.index(first.colour), SHAPES.index(first.shape)
    relation = RELATIONS[relation_index]
    # len(COLOURS) and len(SHAPES) are coprime, so the steps visit every object once.
    steps = range(1 + relation_index, 1 + relation_index + len(COLOURS) * len(SHAPES))
    candidates = (ObjectLabel(COLOURS[(ci + k) % len(COLOURS)], SHAPES[(si + k) % len(SHAPES)]) for k in steps)
    return next(
        second
        for second in candidates
        if second.colour != first.colour
        and second.shape != first.shape
        and not is_heldout(SceneLabels((first, second), relation))
    )


def _relations(split: str) -> list[SceneLabels]:
    if split == "heldout":
        order = _all_objects()
        pairs = sorted(tuple(sorted(pair, key=order.index)) for pair in HELDOUT_PAIRS)
        return [SceneLabels(pair, r) for pair in pairs for r in RELATIONS]
    return [
        SceneLabels((first, _partner(first, j)), relation)
        for first in _all_objects()
        if first not in HELDOUT_OBJECTS
        for j, relation in enumerate(RELATIONS)
    ]


@cache
def _prompt_set(name: str, split: str) -> tuple[WorldPrompt, ...]:
    labels = _objects(split) if name == "objects" else _relations(split)
    return tuple(_prompt(label) for label in labels)


def get_prompt_set(name: str, split: str = "train") -> list[WorldPrompt]:
    """Prompts of set ``name`` ("objects" or "relations") and ``split`` ("train" or "heldout")."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; valid names: {PROMPT_SETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for prompt set {name!r}; valid splits: {SPLITS}")
    return list(_prompt_set(name, split))
