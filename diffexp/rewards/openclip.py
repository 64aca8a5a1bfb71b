"""open_clip models built from a local checkpoint (shared by the LAION-aesthetic and HPS rewards).

The architecture comes from an open_clip model name (``"ViT-L-14"``, ``"ViT-H-14"`` or a config
registered in ``open_clip.factory._MODEL_CONFIGS``); the weights are loaded by
:func:`diffexp.rewards.loading.load_state_dict` (safe loading), strictly, so a wrong checkpoint fails loudly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from diffexp.rewards.loading import frozen, load_state_dict
from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

#: Files an open_clip hub repo holds its weights in, safest first.
OPEN_CLIP_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def load_open_clip(
    model_name: str, path: str | Path, *, quick_gelu: bool, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    """An open_clip CLIP of architecture ``model_name`` with the weights at ``path``, frozen for inference."""
    import open_clip

    with _quiet():  # open_clip warns "initialized randomly": the weights come right after
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    model.load_state_dict(load_state_dict(path), strict=True)
    return frozen(model, device, dtype)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def open_clip_tokenizer(model_name: str) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for ``model_name`` (CLIP's BPE ships with the package: no download)."""
    import open_clip

    return open_clip.get_tokenizer(model_name)


def preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    """Input size and normalisation an open_clip model expects."""
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    return {
        "size": cfg.get("size", visual.image_size),
        "mean": cfg.get("mean", OPENAI_CLIP_MEAN),
        "std": cfg.get("std", OPENAI_CLIP_STD),
    }


def hub_source_for_tag(model_name: str, tag: str) -> str | None:
    """The hub location (``org/repo`` or ``org/repo/file``) of an open_clip pretrained tag, e.g. ``"openai"``."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    return cfg.get("hf_hub", "").strip("/") or None
