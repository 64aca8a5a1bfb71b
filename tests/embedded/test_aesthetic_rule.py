"""Tests of the hidden aesthetic rule: range, purity, variation and the direction of each term."""

from __future__ import annotations

import numpy as np
import torch

from diffexp.embedded.aesthetic_rule import WEIGHTS, aesthetic_score, aesthetic_terms
from diffexp.embedded.scenes import Background, SceneObject, SceneSpec, render, sample_training_batch, to_tensor


def _scene(
    background: tuple[float, float, float] = (0.78, 0.78, 0.78),
    centre: tuple[float, float] = (16.0, 16.0),
    size: float = 8.0,
    noise_std: float = 0.0,
    shade: float = 1.0,
) -> np.ndarray:
    bg = Background("custom", background, (0.0, 0.0), noise_std, 0)
    return render(SceneSpec((SceneObject("red", "circle", size, centre, shade),), bg))


def test_range_shape_and_input_types() -> None:
    images, _, _ = sample_training_batch(np.random.default_rng(0), 64)
    scores = aesthetic_score(images)
    assert scores.shape == (64,) and scores.dtype == torch.float32
    assert 0.0 <= scores.min() and scores.max() <= 10.0
    torch.testing.assert_close(scores, aesthetic_score(to_tensor(images)))
    for term in aesthetic_terms(images).values():
        assert 0.0 <= term.min() and term.max() <= 1.0
    assert sum(WEIGHTS.values()) == 1.0


def test_pure_function_of_each_image() -> None:
    images, _, _ = sample_training_batch(np.random.default_rng(1), 8)
    batch = aesthetic_score(images)
    single = torch.cat([aesthetic_score(image) for image in images])
    torch.testing.assert_close(batch, single)


def test_varies_across_world_images() -> None:
    images, _, _ = sample_training_batch(np.random.default_rng(2), 300)
    scores = aesthetic_score(images)
    assert scores.std() > 0.8
    assert scores.max() - scores.min() > 4.0


def test_beautiful_image_beats_bad_image() -> None:
    beautiful = _scene()
    bad = _scene(background=(0.08, 0.08, 0.08), centre=(26.0, 26.0), size=5.0, noise_std=0.04, shade=0.5)
    scores = aesthetic_score(np.stack([beautiful, bad]))
    assert scores[0] > 8.0 and scores[1] < 4.0


def test_each_term_moves_the_score_in_its_direction() -> None:
    base = aesthetic_score(_scene())
    assert aesthetic_score(_scene(centre=(8.0, 9.0))) < base - 0.5  # off-centre
    assert aesthetic_score(_scene(size=3.0)) < base - 0.5  # too small
    assert aesthetic_score(_scene(background=(0.1, 0.1, 0.1))) < base - 1.0  # dark background
    assert aesthetic_score(_scene(noise_std=0.03)) < base - 1.0  # grainy
    assert aesthetic_score(_scene(shade=0.5)) < base - 0.3  # dull object


def test_noise_images_score_low() -> None:
    noise = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images, _, _ = sample_training_batch(np.random.default_rng(3), 64)
    assert aesthetic_score(noise).max() < aesthetic_score(images).median() - 2.0
