"""Tests of the prompt sets: sizes, split disjointness, phrases and error messages."""

from __future__ import annotations

import dataclasses

import pytest

from diffexp.embedded.prompt_sets import PROMPT_SETS, SPLITS, WorldPrompt, get_prompt_set
from diffexp.embedded.scenes import (
    COLOURS,
    HELDOUT_OBJECTS,
    HELDOUT_PAIRS,
    RELATIONS,
    SHAPES,
    is_heldout,
    parse_caption,
)


def test_sizes() -> None:
    n_objects = len(COLOURS) * len(SHAPES)
    assert len(get_prompt_set("objects", "train")) == n_objects - len(HELDOUT_OBJECTS)
    assert len(get_prompt_set("objects", "heldout")) == len(HELDOUT_OBJECTS)
    assert len(get_prompt_set("relations", "train")) == (n_objects - len(HELDOUT_OBJECTS)) * len(RELATIONS)
    assert len(get_prompt_set("relations", "heldout")) == len(HELDOUT_PAIRS) * len(RELATIONS)
    assert get_prompt_set("objects") == get_prompt_set("objects", "train")


@pytest.mark.parametrize("name", PROMPT_SETS)
def test_splits_are_disjoint_and_match_heldout_constants(name: str) -> None:
    train, heldout = get_prompt_set(name, "train"), get_prompt_set(name, "heldout")
    assert not {p.text for p in train} & {p.text for p in heldout}
    assert not any(is_heldout(p.labels) for p in train)
    assert all(is_heldout(p.labels) for p in heldout)
    if name == "objects":
        assert {p.labels.objects[0] for p in heldout} == HELDOUT_OBJECTS
    else:
        assert {frozenset(p.labels.objects) for p in heldout} == HELDOUT_PAIRS
        assert {p.labels.relation for p in train} == set(RELATIONS)


@pytest.mark.parametrize("name", PROMPT_SETS)
@pytest.mark.parametrize("split", SPLITS)
def test_prompts_are_well_formed(name: str, split: str) -> None:
    prompts = get_prompt_set(name, split)
    assert len({p.text for p in prompts}) == len(prompts)
    for prompt in prompts:
        assert isinstance(prompt, WorldPrompt)
        assert parse_caption(prompt.text) == prompt.labels
        assert prompt.phrases == tuple(o.phrase for o in prompt.labels.objects)
        assert all(phrase in prompt.text for phrase in prompt.phrases)
        if name == "relations":
            first, second = prompt.labels.objects
            assert first.colour != second.colour and first.shape != second.shape


def test_prompts_are_immutable_and_lists_are_fresh() -> None:
    prompts = get_prompt_set("objects")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompts[0].text = "a red blob"  # type: ignore[misc]
    prompts.clear()
    assert get_prompt_set("objects")


def test_errors_name_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown prompt set 'animals'.*objects.*relations"):
        get_prompt_set("animals")
    with pytest.raises(ValueError, match=r"unknown split 'test'.*train.*heldout"):
        get_prompt_set("objects", "test")
