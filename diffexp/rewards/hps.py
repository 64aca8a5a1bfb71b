"""Human Preference Score v2 / v2.1: an open_clip ViT-H-14 fine-tuned on human preferences.

As the reference ``hpsv2.score``: the checkpoint (``HPS_v2_compressed.pt`` or
``HPS_v2.1_compressed.pt`` from ``xswu/HPSv2``, weights under ``"state_dict"``) replaces every
weight of an open_clip ViT-H-14, and the score is the dot product of the normalised image and
text features (no logit scale; typically 0.2-0.35). Images are fitted and zero-padded
to 224 like the reference's validation transform, on tensors so AlignProp can differentiate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from diffexp.rewards.base import register_reward
from diffexp.rewards.loading import LazyReward, WeightsSpec, resolve_file
from diffexp.rewards.openclip import load_open_clip, open_clip_tokenizer, preprocess_cfg
from diffexp.rewards.preprocess import clip_preprocess

CHECKPOINTS = {"v2": "HPS_v2_compressed.pt", "v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}


def weights_spec(version: str) -> WeightsSpec:
    filename = CHECKPOINTS[version]
    return WeightsSpec(
        reward="hps" if version in ("v2", "v2.0") else f"hps{version}",
        what=f"the HPS{version} checkpoint",
        argument="weights",
        filenames=(filename,),
        download=f"`hf download xswu/HPSv2 {filename}` (https://huggingface.co/xswu/HPSv2)",
    )


@register_reward("hps", label="HPSv2")
class HPSReward(LazyReward):
    """HPSv2 (``version="v2"``) or HPSv2.1 (``"v2.1"``); ``weights`` is a hub id, a file or its folder."""

    name = "hps"
    differentiable = True

    def __init__(
        self,
        weights: str | Path = "xswu/HPSv2",
        version: str = "v2",
        clip_model: str = "ViT-H-14",
        **lazy_options,
    ):
        super().__init__(**lazy_options)
        if version not in CHECKPOINTS:
            raise ValueError(f"unknown HPS version {version!r}; choose one of {sorted(CHECKPOINTS)}")
        self.weights, self.version, self.clip_model = weights, version, clip_model
        self.name = weights_spec(version).reward

    def load(self, device: torch.device):
        path = resolve_file(self.weights, weights_spec(self.version), local_files_only=self.local_files_only)
        model = load_open_clip(self.clip_model, path, quick_gelu=False, device=device, dtype=self.dtype)
        return model, open_clip_tokenizer(self.clip_model), preprocess_cfg(model)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        model, tokenizer, cfg = self.models(images)
        device = model.logit_scale.device
        pixels = clip_preprocess(images.to(device=device, dtype=torch.float32), fit="pad", **cfg).to(self.dtype)
        image = model.encode_image(pixels, normalize=True)
        with torch.no_grad():
            text = model.encode_text(tokenizer(list(prompts)).to(device), normalize=True)
        return (image * text).sum(-1).to(images.device)


@register_reward("hpsv2.1", label="HPSv2.1")
def hps_v21(**kwargs) -> HPSReward:
    """HPSv2.1, the usual choice in recent reward fine-tuning work."""
    return HPSReward(version="v2.1", **kwargs)


hps_v21.differentiable = HPSReward.differentiable  # read by AlignProp's list of usable rewards
