"""LAION aesthetic score: the improved-aesthetic-predictor MLP on CLIP ViT-L/14 image embeddings.

As in DDPO and AlignProp: the MLP of christophschuhmann/improved-aesthetic-predictor
(``sac+logos+ava1-l14-linearMSE.pth``) applied to the L2-normalised image embedding of OpenAI's
CLIP ViT-L/14 (here through open_clip). Preprocessing is done on tensors so that AlignProp can
back-propagate the score into the pixels; scores are roughly on a 1-10 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from diffexp.rewards.base import register_reward
from diffexp.rewards.loading import LazyReward, WeightsSpec, frozen, load_state_dict, resolve_file
from diffexp.rewards.openclip import OPEN_CLIP_FILENAMES, hub_source_for_tag, load_open_clip, preprocess_cfg
from diffexp.rewards.preprocess import clip_preprocess

HEAD_FILENAMES = ("sac+logos+ava1-l14-linearMSE.pth", "aesthetic-model.pth")
HEAD_SPEC = WeightsSpec(
    reward="aesthetic",
    what="the LAION improved-aesthetic-predictor head",
    argument="head_weights",
    filenames=HEAD_FILENAMES,
    download="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
    "sac+logos+ava1-l14-linearMSE.pth (or its copy used by TRL's DDPO: "
    "`hf download trl-lib/ddpo-aesthetic-predictor aesthetic-model.pth`)",
)
CLIP_SPEC = WeightsSpec(
    reward="aesthetic",
    what="the CLIP ViT-L/14 image tower (open_clip format)",
    argument="clip_weights",
    filenames=OPEN_CLIP_FILENAMES,
    download="`hf download timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors` "
    "(or open_clip_pytorch_model.bin; OpenAI's CLIP ViT-L/14, i.e. the open_clip tag 'openai')",
)


class AestheticMLP(torch.nn.Module):
    """The reference MLP; module indices match the checkpoint keys ``layers.{0,2,4,6,7}.*``."""

    def __init__(self, dim: int = 768):
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

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


@register_reward("aesthetic", label="LAION aesthetic")
class AestheticReward(LazyReward):
    """LAION aesthetic predictor; ``clip_weights`` is an open_clip tag, a hub id or a local path."""

    name = "aesthetic"
    differentiable = True

    def __init__(
        self,
        head_weights: str | Path = "trl-lib/ddpo-aesthetic-predictor",
        clip_weights: str | Path = "openai",
        clip_model: str = "ViT-L-14",
        quick_gelu: bool = True,  # OpenAI's CLIP uses QuickGELU; False for LAION-trained towers
        **lazy_options,
    ):
        super().__init__(**lazy_options)
        self.head_weights, self.clip_weights = head_weights, clip_weights
        self.clip_model, self.quick_gelu = clip_model, quick_gelu

    def load(self, device: torch.device):
        head_path = resolve_file(self.head_weights, HEAD_SPEC, local_files_only=self.local_files_only)
        state = load_state_dict(head_path)
        head = AestheticMLP(dim=state["layers.0.weight"].shape[1] if "layers.0.weight" in state else 768)
        head.load_state_dict(state, strict=True)

        source = self.clip_weights
        if not Path(source).expanduser().exists():
            source = hub_source_for_tag(self.clip_model, str(source)) or source
        clip_path = resolve_file(source, CLIP_SPEC, local_files_only=self.local_files_only)
        clip = load_open_clip(self.clip_model, clip_path, quick_gelu=self.quick_gelu, device=device, dtype=self.dtype)
        if clip.visual.output_dim != head.layers[0].in_features:
            raise ValueError(
                f"aesthetic: the head takes {head.layers[0].in_features}-d embeddings but {self.clip_model} "
                f"gives {clip.visual.output_dim}-d ones; use the CLIP the head was trained on (ViT-L-14)"
            )
        return clip, frozen(head, device, self.dtype), preprocess_cfg(clip)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        clip, head, cfg = self.models(images)
        device = next(clip.parameters()).device
        pixels = clip_preprocess(images.to(device=device, dtype=torch.float32), **cfg).to(self.dtype)
        embeddings = torch.nn.functional.normalize(clip.encode_image(pixels), dim=-1)
        return head(embeddings).to(images.device)
