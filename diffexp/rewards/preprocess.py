"""CLIP image preprocessing on tensors, differentiable end to end.

The reference scorers preprocess PIL images (resize with bicubic filtering, crop or pad, then
normalise). AlignProp back-propagates the reward into the pixels, so the same steps are done
here with torch ops: ``interpolate(bicubic, antialias=True)`` approximates PIL's bicubic filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

#: OpenAI CLIP's normalisation (also used by the LAION-trained CLIP-H models behind PickScore and HPS).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    resized = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp(0, 1)  # bicubic overshoots; PIL's uint8 output saturates the same way


def resize_crop(images: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resize so the image covers ``size``, then centre-crop (torchvision ``Resize`` + ``CenterCrop``)."""
    (th, tw), (h, w) = _pair(size), images.shape[-2:]
    scale = max(th / h, tw / w)
    new_h, new_w = (th, int(w * scale)) if th / h >= tw / w else (int(h * scale), tw)
    images = _resize(images, (max(new_h, th), max(new_w, tw)))
    top = int(round((images.shape[-2] - th) / 2.0))
    left = int(round((images.shape[-1] - tw) / 2.0))
    return images[..., top : top + th, left : left + tw]


def resize_pad(images: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resize so the image fits in ``size``, then pad with black (open_clip's ``ResizeMaxSize``, as HPSv2)."""
    (th, tw), (h, w) = _pair(size), images.shape[-2:]
    scale = min(th / h, tw / w)
    new_h, new_w = min(th, round(h * scale)), min(tw, round(w * scale))
    images = _resize(images, (new_h, new_w))
    pad_h, pad_w = th - new_h, tw - new_w
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.as_tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def clip_preprocess(
    images: torch.Tensor,
    size: int | Sequence[int] = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    fit: Literal["crop", "pad"] = "crop",
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> the normalised (B, 3, size, size) pixels a CLIP vision tower takes."""
    if fit not in ("crop", "pad"):
        raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")
    images = resize_crop(images, size) if fit == "crop" else resize_pad(images, size)
    return normalize(images, mean, std)
