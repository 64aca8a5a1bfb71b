"""PickScore: ``logit_scale.exp() * cos(text, image)`` of a CLIP-H fine-tuned on Pick-a-Pic preferences.

Reference: ``yuvalkirstain/PickScore_v1`` (a transformers ``CLIPModel``) with the processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``. The processor's image steps are redone on tensors
(:mod:`diffexp.rewards.preprocess`) so the score is differentiable in the pixels. Without a
``processor`` folder, tokenisation uses :func:`diffexp.models.tokenizer.clip_tokenizer` (the same
BPE) and OpenAI CLIP's normalisation, which is what that processor specifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from diffexp.rewards.base import register_reward
from diffexp.rewards.loading import LazyReward, WeightsSpec, check_source, explain_missing, frozen
from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess

MODEL_SPEC = WeightsSpec(
    reward="pickscore",
    what="the PickScore CLIP model (a transformers CLIPModel folder)",
    argument="model",
    filenames=("config.json", "model.safetensors or pytorch_model.bin"),
    download="`hf download yuvalkirstain/PickScore_v1`",
    folder=True,
)
PROCESSOR_SPEC = WeightsSpec(
    reward="pickscore",
    what="the CLIP-H processor (tokenizer and preprocessor configs)",
    argument="processor",
    filenames=("preprocessor_config.json", "tokenizer_config.json"),
    download="`hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include '*.json' '*.txt'` "
    "(optional: leave `processor=None` to use the built-in CLIP tokenizer and normalisation)",
    folder=True,
)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features``; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_reward("pickscore", label="PickScore")
class PickScoreReward(LazyReward):
    """PickScore; ``model`` and ``processor`` are hub ids (read from the local cache) or local folders."""

    name = "pickscore"
    differentiable = True

    def __init__(
        self,
        model: str | Path = "yuvalkirstain/PickScore_v1",
        processor: str | Path | None = None,
        **lazy_options,
    ):
        super().__init__(**lazy_options)
        self.model_source, self.processor_source = model, processor

    def load(self, device: torch.device):
        from transformers import CLIPModel

        from diffexp.models.tokenizer import clip_tokenizer

        lfo = self.local_files_only
        source = check_source(self.model_source, MODEL_SPEC, local_files_only=lfo)
        with explain_missing(MODEL_SPEC, self.model_source, lfo):
            model = CLIPModel.from_pretrained(source, local_files_only=lfo, weights_only=True, dtype=torch.float32)
        tokenizer = clip_tokenizer()
        image_cfg = {"size": model.config.vision_config.image_size, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}
        if self.processor_source is not None:
            tokenizer, image_cfg = self._load_processor(lfo)
        return frozen(model, device, self.dtype), tokenizer, image_cfg

    def _load_processor(self, lfo: bool):
        from transformers import AutoTokenizer, CLIPImageProcessor

        source = check_source(self.processor_source, PROCESSOR_SPEC, local_files_only=lfo)
        with explain_missing(PROCESSOR_SPEC, self.processor_source, lfo):
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=lfo)
            images = CLIPImageProcessor.from_pretrained(source, local_files_only=lfo)
        crop = images.crop_size  # a dict, or a SizeDict in transformers 5
        size = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop.height, crop.width)
        return tokenizer, {"size": size, "mean": tuple(images.image_mean), "std": tuple(images.image_std)}

    def text_embeddings(self, prompts: Sequence[str], model, tokenizer) -> torch.Tensor:
        """Normalised text embeddings (never needs gradients)."""
        device = model.logit_scale.device
        tokens = tokenizer(
            list(prompts),
            padding="max_length",
            max_length=model.config.text_config.max_position_embeddings,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            text = model.get_text_features(
                input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
            )
        return torch.nn.functional.normalize(_features(text), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        model, tokenizer, image_cfg = self.models(images)
        device = model.logit_scale.device
        pixels = clip_preprocess(images.to(device=device, dtype=torch.float32), **image_cfg).to(self.dtype)
        image = torch.nn.functional.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)
        text = self.text_embeddings(prompts, model, tokenizer)
        return (model.logit_scale.exp() * (image * text).sum(-1)).to(images.device)
