"""JPEG (in)compressibility: DDPO's definition, checked against sizes computed directly with PIL."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from diffexp.rewards import build_reward


def pil_size_kb(image: torch.Tensor) -> float:
    array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


def test_values_match_pil_and_signs():
    torch.manual_seed(0)
    images = torch.cat([torch.full((1, 3, 64, 64), 0.4), torch.rand(2, 3, 64, 64)])
    prompts = ["x"] * 3
    sizes = torch.tensor([pil_size_kb(image) for image in images], dtype=torch.float32)
    incompressibility = build_reward("jpeg_incompressibility")(images, prompts)
    compressibility = build_reward("jpeg_compressibility", quality=95)(images, prompts)
    assert torch.equal(incompressibility, sizes)
    assert torch.equal(compressibility, -sizes)
    assert compressibility[0] > compressibility[1]  # a flat image is more compressible than noise


def test_not_differentiable_and_batched():
    reward = build_reward("jpeg_compressibility")
    assert not reward.differentiable
    images = torch.rand(5, 3, 16, 16, requires_grad=True)
    scores = reward(images, ["x"] * 5)
    assert not scores.requires_grad
    reward.batch_size = 2
    assert torch.equal(reward(images, ["x"] * 5), scores)
