"""HPSv2 / HPSv2.1 on a tiny random open_clip twin saved in the reference checkpoint layout."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from open_clip import factory

from diffexp.rewards import build_reward
from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tests.helpers import tiny_open_clip_config

TINY = "diffexp-tiny-hps"
PROMPTS = ["a red colored car.", "a cat on a mat", "two dogs"]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    factory._MODEL_CONFIGS[TINY] = tiny_open_clip_config()
    folder = tmp_path_factory.mktemp("hps")
    models = {}
    for seed, filename in enumerate(["HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"]):
        torch.manual_seed(seed)
        models[filename] = open_clip.create_model(TINY).eval()
        torch.save({"state_dict": models[filename].state_dict()}, folder / filename)  # as the reference files
    yield folder, models
    factory._MODEL_CONFIGS.pop(TINY, None)


def expected(model, images, prompts):
    """hpsv2.score: diag(image_features @ text_features.T) of normalised features; fit-and-pad 24x40 -> 32x32."""
    pixels = TF.resize(images, [19, 32], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    pixels = TF.normalize(TF.pad(pixels, [0, 6, 0, 7], fill=0.0), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    image = model.encode_image(pixels, normalize=True)
    text = model.encode_text(open_clip.get_tokenizer(TINY)(prompts), normalize=True)
    return torch.diagonal(image @ text.T)


@pytest.mark.parametrize("name, filename", [("hps", "HPS_v2_compressed.pt"), ("hpsv2.1", "HPS_v2.1_compressed.pt")])
def test_scores_match_the_reference_formula(twins, name, filename):
    folder, models = twins
    reward = build_reward(name, weights=str(folder), clip_model=TINY)
    images = torch.rand(3, 3, 24, 40)
    scores = reward(images, PROMPTS)
    with torch.no_grad():
        assert torch.allclose(scores, expected(models[filename], images, PROMPTS), atol=1e-5)


def test_version_option_and_gradients_and_batching(twins):
    folder, _ = twins
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    reward = build_reward(
        "hps", version="v2.1", weights=str(folder / "HPS_v2.1_compressed.pt"), clip_model=TINY, batch_size=2
    )
    assert reward.name == "hpsv2.1"
    scores = reward(images, PROMPTS)
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    whole = build_reward("hpsv2.1", weights=str(folder), clip_model=TINY)(images.detach(), PROMPTS)
    assert torch.allclose(scores.detach(), whole, atol=1e-6)
    with pytest.raises(ValueError, match="unknown HPS version"):
        build_reward("hps", version="v3")
