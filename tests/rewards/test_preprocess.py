"""Tensor CLIP preprocessing: shapes, crop/pad geometry, closeness to the PIL pipeline, differentiability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess, resize_crop, resize_pad


def smooth_images(batch=2, height=96, width=128):
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.stack([x, y, (x + y) / 2]) * 0.8 + 0.1
    return image.expand(batch, 3, height, width).clone()


def test_close_to_the_pil_processor():
    images = smooth_images()
    ours = clip_preprocess(images, 64)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 64, "width": 64},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    pil = [Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()) for image in images]
    reference = torch.as_tensor(np.asarray(processor(images=pil, return_tensors="pt").pixel_values))
    assert ours.shape == reference.shape == (2, 3, 64, 64)
    assert (ours - reference).abs().mean() < 0.02  # uint8 rounding and PIL's filter vs torch's


def test_geometry():
    images = torch.rand(1, 3, 30, 60)
    assert resize_crop(images, 20).shape[-2:] == (20, 20)
    padded = resize_pad(images, 20)
    assert padded.shape[-2:] == (20, 20)
    assert padded[..., :5, :].abs().sum() == 0 and padded[..., 15:, :].abs().sum() == 0  # black bars
    same = torch.rand(1, 3, 20, 20)
    assert torch.equal(resize_crop(same, 20), same) and torch.equal(resize_pad(same, 20), same)
    with pytest.raises(ValueError, match="fit"):
        clip_preprocess(same, 20, fit="stretch")


def test_differentiable():
    images = torch.rand(1, 3, 40, 40, requires_grad=True)
    clip_preprocess(images, 24).sum().backward()
    assert images.grad.abs().sum() > 0
