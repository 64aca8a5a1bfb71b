"""The embedded world's learned rewards, shaped like the real ones and sharing no weights with the generator.

* ``embedded_alignment`` (PickScore-style): ``logit_scale.exp() * cos(text, image)`` of a small
  ``CLIPModel`` trained contrastively on the world, with hard negatives (swapped colours,
  shapes and relations) so that it is sensitive to composition.
* ``embedded_aesthetic`` (LAION-aesthetic-style): an MLP head on the L2-normalised image
  embedding of a small CLIP vision tower, trained to predict the hidden rule of
  :mod:`diffexp.embedded.aesthetic_rule`.

Both are differentiable with respect to the image (AlignProp). The ground-truth evaluator
(:mod:`diffexp.embedded.ground_truth`) measures real prompt following and exposes reward hacking, so
the default runs never train on it. It is registered only as a diagnostic oracle:

* ``embedded_ground_truth``: the share of a prompt's criteria the evaluator finds met (each
  object drawn with the right colour and shape, and the relation), in [0, 1]. Not
  differentiable (DDPO only). It tells apart "DDPO cannot climb this kind of reward" from "DDPO
  climbs the learned reward's holes"; a run trained on it has no independent gauge left.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffexp.embedded.ground_truth import evaluate_detailed
from diffexp.models.tokenizer import clip_tokenizer
from diffexp.rewards.base import Reward, register_reward

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: OpenAI CLIP's normalisation, as the real rewards use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_normalise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> CLIP-normalised pixels (differentiable; the world's CLIPs take 32x32 directly)."""
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class AestheticHead(torch.nn.Module):
    """LAION's improved-aesthetic-predictor MLP layout, scaled to a small embedding."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 256),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(256, 64),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(64, 32),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(32, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"the embedded world's {what} weights are missing at {path}. They ship with the repository; "
        f"restore them with `git checkout -- {path}` or retrain with `diffexp embedded train`."
    )


@register_reward("embedded_alignment", ground_truth="eval_gt_accuracy", label="alignment")
class WorldAlignmentReward(Reward):
    """PickScore-style prompt-image alignment for the embedded world."""

    name = "embedded_alignment"
    differentiable = True

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.path = Path(path) if path else WEIGHTS_DIR / "reward_clip"
        self.device = torch.device(device)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from transformers import CLIPModel

            if not (self.path / "config.json").exists():
                raise _missing(self.path, "alignment reward")
            self._model = (
                CLIPModel.from_pretrained(self.path, dtype=torch.float32).to(self.device).eval().requires_grad_(False)
            )
        return self._model

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = clip_tokenizer()(
            list(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            text = self.model.get_text_features(input_ids=ids.to(self.device))
        return torch.nn.functional.normalize(_features(text), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        image = _features(self.model.get_image_features(pixel_values=clip_normalise(images.to(self.device))))
        image = torch.nn.functional.normalize(image, dim=-1)
        return self.model.logit_scale.exp() * (image * self.text_embeddings(prompts)).sum(-1)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_reward("embedded_aesthetic", ground_truth="eval_gt_aesthetic", label="aesthetic")
class WorldAestheticReward(Reward):
    """LAION-aesthetic-style score (about 0-10) for the embedded world."""

    name = "embedded_aesthetic"
    differentiable = True

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.path = Path(path) if path else WEIGHTS_DIR / "aesthetic"
        self.device = torch.device(device)
        self._tower = None
        self._head = None

    def _load(self):
        from transformers import CLIPVisionModelWithProjection

        if not (self.path / "config.json").exists():
            raise _missing(self.path, "aesthetic reward")
        tower = CLIPVisionModelWithProjection.from_pretrained(self.path, dtype=torch.float32)
        head = AestheticHead(tower.config.projection_dim)
        head.load_state_dict(load_file(str(self.path / "head.safetensors")))
        self._tower = tower.to(self.device).eval().requires_grad_(False)
        self._head = head.to(self.device).eval().requires_grad_(False)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if self._tower is None:
            self._load()
        embeds = self._tower(pixel_values=clip_normalise(images.to(self.device))).image_embeds
        return self._head(torch.nn.functional.normalize(embeds, dim=-1))


@register_reward("embedded_ground_truth", label="ground-truth oracle")
class WorldGroundTruthReward(Reward):
    """Diagnostic oracle: the share of the prompt's criteria met, by the ground-truth evaluator."""

    name = "embedded_ground_truth"
    differentiable = False
    batch_size = 256  # no model: the evaluator is numpy, per image

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        results = evaluate_detailed(images.detach().cpu(), list(prompts))
        return torch.tensor([r.share_met for r in results], dtype=torch.float32)
