"""Captioned image grids, for `diffexp sample` and the reports."""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) tensors in [0, 1] -> PIL images."""
    array = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


@lru_cache(maxsize=1)
def _caption_font() -> tuple[ImageFont.FreeTypeFont, frozenset[int]]:
    """DejaVu Sans (shipped with matplotlib: accents, Greek, Cyrillic, symbols) and the code points
    it draws; Pillow's default font draws boxes for most characters outside ASCII."""
    from pathlib import Path

    import matplotlib
    from matplotlib.ft2font import FT2Font

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), 10), frozenset(FT2Font(str(path)).get_charmap())


def drawable(text: str) -> str:
    """``text`` with each character the caption font cannot draw (emoji, most CJK) shown as '?'."""
    covered = _caption_font()[1]
    return "".join(ch if ord(ch) in covered or ch in "\n\t" else "?" for ch in text)


def captioned_grid(
    images: torch.Tensor | list[Image.Image],
    captions: list[str],
    ncols: int = 4,
    cell: int = 160,
    caption_lines: int = 4,
) -> Image.Image:
    """A grid of images (upscaled to ``cell`` pixels, nearest-neighbour so small images stay crisp)
    with each image's caption written under it."""
    pil = to_pil(images) if isinstance(images, torch.Tensor) else list(images)
    if len(pil) != len(captions):
        raise ValueError(f"{len(pil)} images but {len(captions)} captions")
    font = _caption_font()[0]
    line_height = 13
    chars = max(8, cell // 6)
    rows = (len(pil) + ncols - 1) // ncols
    height = cell + caption_lines * line_height + 6
    grid = Image.new("RGB", (ncols * cell, max(rows, 1) * height), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, caption) in enumerate(zip(pil, captions)):
        x, y = (i % ncols) * cell, (i // ncols) * height
        grid.paste(image.resize((cell, cell), Image.NEAREST), (x, y))
        lines = textwrap.wrap(drawable(caption), chars)[:caption_lines]
        for j, line in enumerate(lines):
            draw.text((x + 3, y + cell + 3 + j * line_height), line, fill="black", font=font)
    return grid


def image_strip(images: torch.Tensor) -> Image.Image:
    """The images side by side in one row at their own size, uncaptioned (a lossless record of
    evaluation samples that a report can cut back into tiles)."""
    pil = to_pil(images)
    if not pil:
        raise ValueError("no images")
    width, height = pil[0].size
    strip = Image.new("RGB", (width * len(pil), height))
    for i, image in enumerate(pil):
        strip.paste(image, (i * width, 0))
    return strip


def split_strip(strip: Image.Image, count: int) -> list[Image.Image]:
    """The ``count`` tiles of an :func:`image_strip`, in order."""
    if count < 1 or strip.width % count:
        raise ValueError(f"a strip {strip.width} px wide does not hold {count} equal tiles")
    width = strip.width // count
    return [strip.crop((i * width, 0, (i + 1) * width, strip.height)) for i in range(count)]
