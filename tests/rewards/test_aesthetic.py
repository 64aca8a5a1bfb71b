"""LAION aesthetic reward on a tiny random open_clip twin, loaded through the real code path."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from open_clip import factory

from diffexp.rewards import build_reward
from diffexp.rewards.aesthetic import AestheticMLP
from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tests.helpers import tiny_open_clip_config

TINY = "diffexp-tiny-aesthetic"
REFERENCE_KEYS = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


class ReferenceHead(torch.nn.Module):
    """improved-aesthetic-predictor's MLP, written out independently of diffexp."""

    def __init__(self, dim):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    factory._MODEL_CONFIGS[TINY] = tiny_open_clip_config(quick_gelu=True)
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY).eval()
    head = ReferenceHead(16).eval()
    folder = tmp_path_factory.mktemp("aesthetic")
    torch.save(head.state_dict(), folder / "sac+logos+ava1-l14-linearMSE.pth")  # the reference file layout
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    yield folder, clip, head
    factory._MODEL_CONFIGS.pop(TINY, None)


def make(folder, **kwargs):
    return build_reward("aesthetic", head_weights=str(folder), clip_weights=str(folder), clip_model=TINY, **kwargs)


def expected(images, clip, head):
    pixels = TF.resize(images, [32, 38], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    pixels = TF.normalize(TF.center_crop(pixels, [32, 32]), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    embeddings = clip.encode_image(pixels)
    return head.layers(embeddings / embeddings.norm(dim=-1, keepdim=True)).squeeze(-1)


def test_reference_head_layout():
    assert set(AestheticMLP().state_dict()) == REFERENCE_KEYS
    assert AestheticMLP().layers[0].in_features == 768 and set(ReferenceHead(768).state_dict()) == REFERENCE_KEYS


def test_scores_match_an_independent_computation(twin):
    folder, clip, head = twin
    assert set(torch.load(folder / "sac+logos+ava1-l14-linearMSE.pth", weights_only=True)) == REFERENCE_KEYS
    reward = make(folder)
    assert not reward.loaded
    images = torch.rand(3, 3, 40, 48)
    scores = reward(images, ["a", "b", "c"])
    assert reward.loaded and scores.shape == (3,) and not scores.requires_grad
    with torch.no_grad():
        assert torch.allclose(scores, expected(images, clip, head), atol=1e-5)
    models = reward._cache["models"]
    reward(images[:1], ["a"])
    assert reward._cache["models"] is models  # cached, not reloaded


def test_gradients_reach_the_pixels(twin):
    reward = make(twin[0])
    assert reward.differentiable
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    reward(images, ["a", "b"]).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()


def test_batching_does_not_change_scores(twin):
    images = torch.rand(5, 3, 32, 32)
    whole = make(twin[0])(images, list("abcde"))
    chunked = make(twin[0], batch_size=2)(images, list("abcde"))
    assert torch.allclose(whole, chunked, atol=1e-6)
