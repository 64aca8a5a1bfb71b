"""Tests of the procedural scene generator, caption grammar and held-out sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffexp.embedded.scenes import (
    COLOURS,
    HELDOUT_OBJECTS,
    HELDOUT_PAIRS,
    IMAGE_SIZE,
    OBJECT_GAP,
    SHAPES,
    ObjectLabel,
    SceneLabels,
    caption,
    coverage,
    is_heldout,
    parse_caption,
    phrases,
    render,
    sample_labels,
    sample_spec,
    sample_training_batch,
    to_tensor,
    to_uint8,
)


def _random_specs(seed: int, n: int) -> list:
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, "composition" if i % 2 else "single") for i in range(n)]


def test_render_shape_dtype_and_pure_function_of_spec() -> None:
    spec = sample_spec(np.random.default_rng(0), "composition")
    image = render(spec)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, render(spec))


def test_sampling_is_deterministic_given_generator() -> None:
    a_images, a_captions, a_specs = sample_training_batch(np.random.default_rng(7), 16)
    b_images, b_captions, b_specs = sample_training_batch(np.random.default_rng(7), 16)
    c_images, _, _ = sample_training_batch(np.random.default_rng(8), 16)
    np.testing.assert_array_equal(a_images, b_images)
    assert a_captions == b_captions and a_specs == b_specs
    assert not np.array_equal(a_images, c_images)


def test_backgrounds_are_neutral_but_not_trivially_flat() -> None:
    images, _, specs = sample_training_batch(np.random.default_rng(1), 64)
    assert len({s.background.name for s in specs}) >= 4
    corners = images[:, :2, :2].reshape(-1, 3).astype(int)
    assert (corners.max(axis=1) - corners.min(axis=1)).max() < 60  # low chroma
    textured = [s for s in specs if s.background.noise_std > 0 or any(s.background.gradient)]
    assert len(textured) > len(specs) // 2


def test_tensor_conversion_round_trip() -> None:
    images, _, _ = sample_training_batch(np.random.default_rng(2), 4)
    tensor = to_tensor(images)
    assert tensor.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert to_tensor(images[0]).shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_array_equal(to_uint8(tensor), images)


def test_coverage_matches_geometry() -> None:
    circle = coverage("circle", 8.0, (16.0, 16.0))
    assert circle.sum() == pytest.approx(np.pi * 64, rel=0.02)
    assert coverage("square", 6.0, (10.0, 20.0)).sum() == pytest.approx(144, rel=0.01)
    triangle = coverage("triangle", 6.0, (16.0, 16.0))
    assert triangle.sum() == pytest.approx(72, rel=0.02)
    assert triangle[10:16].sum() < triangle[16:22].sum()  # apex up


def test_caption_round_trip_and_phrases_are_substrings() -> None:
    for spec in _random_specs(3, 200):
        text = caption(spec)
        assert parse_caption(text) == spec.labels
        assert len(phrases(spec)) == len(spec.objects)
        for phrase in phrases(spec):
            assert phrase in text


def test_caption_wording() -> None:
    red = ObjectLabel("red", "circle")
    orange = ObjectLabel("orange", "star")
    assert caption(SceneLabels((red,))) == "a red circle"
    assert caption(SceneLabels((orange, red), "left of")) == "an orange star left of a red circle"
    assert phrases(SceneLabels((orange, red), "left of")) == ("orange star", "red circle")
    assert parse_caption("  A Red   circle ") == SceneLabels((red,))


@pytest.mark.parametrize(
    "text",
    ["a pink circle", "a red hexagon", "a red circle near a blue square", "red circle", "", "a red circle above"],
)
def test_parse_caption_rejects_text_outside_grammar(text: str) -> None:
    with pytest.raises(ValueError, match="outside the grammar"):
        parse_caption(text)


def test_labels_validation() -> None:
    with pytest.raises(ValueError, match="differ in colour"):
        parse_caption("a red circle above a red square")
    with pytest.raises(ValueError, match="unknown relation"):
        SceneLabels((ObjectLabel("red", "circle"), ObjectLabel("blue", "star")), "near")
    with pytest.raises(ValueError, match="unknown colour"):
        SceneLabels((ObjectLabel("pink", "circle"),))
    with pytest.raises(ValueError, match="no relation"):
        SceneLabels((ObjectLabel("red", "circle"),), "above")


def test_compositions_respect_relation_with_gap_and_stay_inside() -> None:
    for spec in _random_specs(4, 300):
        for obj in spec.objects:
            for v in obj.centre:
                assert obj.size <= v <= IMAGE_SIZE - obj.size
        if spec.relation is None:
            continue
        a, b = spec.objects
        assert a.colour != b.colour
        axis = 1 if spec.relation in ("above", "below") else 0
        sign = 1 if spec.relation in ("above", "left of") else -1
        along = sign * (b.centre[axis] - a.centre[axis])
        assert along >= a.size + b.size + OBJECT_GAP - 1e-9
        assert abs(b.centre[1 - axis] - a.centre[1 - axis]) <= 0.5 * along + 1e-9


def test_heldout_constants_are_well_formed() -> None:
    assert sorted(o.shape for o in HELDOUT_OBJECTS) == sorted(SHAPES)
    assert len({o.colour for o in HELDOUT_OBJECTS}) == len(HELDOUT_OBJECTS)
    for pair in HELDOUT_PAIRS:
        assert len(pair) == 2 and not pair & HELDOUT_OBJECTS
        assert len({o.colour for o in pair}) == 2


def test_training_sampler_never_produces_heldout_combinations() -> None:
    rng = np.random.default_rng(5)
    drawn = [sample_labels(rng, "composition", exclude_heldout=True) for _ in range(3000)]
    drawn += [sample_labels(rng, "single", exclude_heldout=True) for _ in range(500)]
    assert not any(is_heldout(labels) for labels in drawn)
    seen_objects = {o for labels in drawn for o in labels.objects}
    assert len(seen_objects) == len(COLOURS) * len(SHAPES) - len(HELDOUT_OBJECTS)
    _, captions, specs = sample_training_batch(rng, 300, composition_fraction=0.5)
    assert not any(is_heldout(s) for s in specs)
    assert all(parse_caption(c) == s.labels for c, s in zip(captions, specs))
    # Without the exclusion, held-out combinations do occur.
    assert any(is_heldout(sample_labels(rng, "composition")) for _ in range(300))


def test_composition_fraction() -> None:
    rng = np.random.default_rng(6)
    _, _, specs = sample_training_batch(rng, 400)
    fraction = np.mean([s.relation is not None for s in specs])
    assert 0.13 < fraction < 0.27
    assert all(s.relation is None for s in sample_training_batch(rng, 20, composition_fraction=0.0)[2])
    assert all(s.relation is not None for s in sample_training_batch(rng, 20, composition_fraction=1.0)[2])
    with pytest.raises(ValueError, match="composition_fraction"):
        sample_training_batch(rng, 2, composition_fraction=1.5)


def test_sample_spec_with_fixed_labels() -> None:
    labels = parse_caption("a blue star right of a yellow square")
    spec = sample_spec(np.random.default_rng(9), labels=labels)
    assert spec.labels == labels
    with pytest.raises(ValueError, match="held out"):
        sample_spec(np.random.default_rng(9), labels=parse_caption("a green star"), exclude_heldout=True)
    with pytest.raises(ValueError, match="kind"):
        sample_spec(np.random.default_rng(9), "pair")
