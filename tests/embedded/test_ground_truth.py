"""Tests of the pixel-only ground-truth evaluator: accuracy on clean, degraded and wrong images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffexp.embedded.ground_truth import detect, evaluate, evaluate_detailed, parse_caption, presence
from diffexp.embedded.scenes import (
    Background,
    SceneLabels,
    SceneObject,
    SceneSpec,
    caption,
    render,
    sample_spec,
    to_tensor,
)

N_SCENES = 300
OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def _degrade(images: np.ndarray, rng: np.random.Generator, sigma: float = 0.7, noise_std: float = 0.05) -> torch.Tensor:
    """Separable Gaussian blur (edge padding) plus Gaussian pixel noise, like blurry model samples."""
    x = to_tensor(images)
    radius = int(np.ceil(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).float()
    x = torch.nn.functional.pad(x, (radius,) * 4, mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    noise = torch.from_numpy(rng.normal(0.0, noise_std, size=x.shape)).float()
    return (x + noise).clamp(0, 1)


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, list[SceneSpec]]:
    rng = np.random.default_rng(123)
    specs = [sample_spec(rng, "composition" if i % 2 else "single") for i in range(N_SCENES)]
    return np.stack([render(s) for s in specs]), specs


def test_accuracy_on_clean_renders(scenes) -> None:
    images, specs = scenes
    assert evaluate(images, specs).mean() >= 0.98


def test_accuracy_on_blurred_noisy_renders(scenes) -> None:
    images, specs = scenes
    degraded = _degrade(images, np.random.default_rng(0))
    assert evaluate(degraded, [caption(s) for s in specs]).mean() >= 0.90


def test_rejects_images_of_other_captions(scenes) -> None:
    images, specs = scenes
    shifted = specs[1:] + specs[:1]  # alternates single/composition, so kinds differ too
    assert evaluate(images, shifted).mean() < 0.2
    other = [sample_spec(np.random.default_rng(i), s.labels.kind) for i, s in enumerate(specs)]
    assert evaluate(images, other).mean() < 0.2


def test_rejects_noise_images() -> None:
    rng = np.random.default_rng(1)
    specs = [sample_spec(rng, "single") for _ in range(100)]
    assert evaluate(rng.random((100, 32, 32, 3)), specs).mean() < 0.2
    assert evaluate(torch.full((100, 3, 32, 32), 0.5), specs).mean() == 0.0


def test_relation_is_checked(scenes) -> None:
    images, specs = scenes
    pairs = [(img, s) for img, s in zip(images, specs) if s.relation is not None]
    flipped = [SceneLabels(s.labels.objects, OPPOSITE[s.relation]) for _, s in pairs]
    results = evaluate_detailed(np.stack([img for img, _ in pairs]), flipped)
    assert np.mean([all(o.shape_correct for o in r.objects) for r in results]) >= 0.98
    assert np.mean([r.relation_correct for r in results]) < 0.05
    assert np.mean([r.correct for r in results]) < 0.05


def test_tensor_and_uint8_inputs_agree(scenes) -> None:
    images, specs = scenes
    np.testing.assert_array_equal(evaluate(images[:40], specs[:40]), evaluate(to_tensor(images[:40]), specs[:40]))
    assert evaluate(to_tensor(images[0]), specs[0]).shape == (1,)


def _single(colour: str, shape: str) -> np.ndarray:
    background = Background("light grey", (0.76, 0.76, 0.76), (0.0, 0.0), 0.0, 0)
    return render(SceneSpec((SceneObject(colour, shape, 8.0, (15.0, 17.0)),), background))


def test_presence_and_detection() -> None:
    image = _single("red", "star")
    assert presence(image, "red", "star").tolist() == [True]
    assert presence(image, "red", "circle").tolist() == [False]
    assert presence(image, "blue", "star").tolist() == [False]
    assert detect(image, "green") is None
    detection = detect(_single("red", "circle"), "red")
    assert detection is not None and detection.shape == "circle"
    assert detection.centroid == pytest.approx((15.0, 17.0), abs=0.2)
    assert detection.area == pytest.approx(np.pi * 64, rel=0.1)


def test_detailed_results_per_criterion() -> None:
    result = evaluate_detailed(_single("blue", "circle"), "a blue square above a red circle")[0]
    assert result.labels == parse_caption("a blue square above a red circle")
    blue, red = result.objects
    assert blue.colour_present and not blue.shape_correct and blue.detection.shape == "circle"
    assert not red.colour_present and not red.shape_correct
    assert result.relation_correct is False and not result.correct
    assert evaluate_detailed(_single("blue", "circle"), "a blue circle")[0].relation_correct is None


def test_input_errors() -> None:
    image = _single("red", "star")
    with pytest.raises(ValueError, match="outside the grammar"):
        evaluate(image, "a red dragon")
    with pytest.raises(ValueError, match="targets"):
        evaluate(np.stack([image, image]), ["a red star"] * 3)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        evaluate(torch.zeros(1, 32, 32, 3), "a red star")
    with pytest.raises(ValueError, match="unknown colour"):
        detect(image, "pink")
