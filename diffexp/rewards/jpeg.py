"""JPEG (in)compressibility, exactly as DDPO's ``rewards.py``: the image's JPEG size in kB.

Images are rounded to uint8, saved by PIL as JPEG at quality 95, and measured in kilobytes
(bytes / 1000). Compressibility is minus the size, incompressibility the size. Not differentiable.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from diffexp.rewards.base import Reward, register_reward


def jpeg_sizes_kb(images: torch.Tensor, quality: int = 95) -> list[float]:
    """JPEG sizes in kB of images (B, 3, H, W) in [0, 1]."""
    pixels = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    sizes = []
    for image in np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)):  # NCHW -> NHWC
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return sizes


class JpegSize(Reward):
    """``sign * JPEG size (kB)``: -1 rewards compressible images, +1 incompressible ones."""

    differentiable = False
    batch_size = 256

    def __init__(self, sign: float, quality: int = 95):
        super().__init__()
        self.sign, self.quality = float(sign), int(quality)
        self.name = "jpeg_compressibility" if self.sign < 0 else "jpeg_incompressibility"

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        sizes = torch.tensor(jpeg_sizes_kb(images, self.quality), dtype=torch.float64, device=images.device)
        return self.sign * sizes


@register_reward("jpeg_compressibility", label="JPEG compressibility")
def jpeg_compressibility(quality: int = 95) -> JpegSize:
    return JpegSize(sign=-1.0, quality=quality)


@register_reward("jpeg_incompressibility", label="JPEG incompressibility")
def jpeg_incompressibility(quality: int = 95) -> JpegSize:
    return JpegSize(sign=+1.0, quality=quality)
