"""Architectures of the embedded world's models, as configs of the real classes.

The generator is a Stable Diffusion pipeline in miniature (CLIP text encoder, AutoencoderKL with
4x downsampling to 4x8x8 latents, UNet2DConditionModel, DDIM); the reward models are a small
``CLIPModel`` (PickScore-style alignment) and an MLP head on its image embedding (LAION-aesthetic
style). Sizes were chosen by measured CPU cost: attention above 8x8 dominates on CPU, so the
UNet works on 8x8 latents (4.2M parameters: 0.2 s per forward at batch 64 on 2 cores).
The 49408-token embedding tables dominate the text towers' size, so they stay narrow.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextModel, CLIPVisionConfig

from diffexp.models.tokenizer import clip_text_config
from diffexp.models.twins import SD_SCHEDULER_CONFIG

IMAGE_SIZE = 32
LATENT_SIZE = 8
TEXT_HIDDEN = 64


def text_config(hidden: int = TEXT_HIDDEN, layers: int = 2, heads: int = 4, projection_dim: int | None = None):
    return clip_text_config(hidden, layers, heads, projection_dim)


def text_encoder() -> CLIPTextModel:
    return CLIPTextModel(text_config())


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=32,
        norm_num_groups=32,
    )


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SD_SCHEDULER_CONFIG)


def reward_clip() -> CLIPModel:
    """A small CLIP for the world's reward models (shares no weights with the generator)."""
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=64,
        hidden_act="quick_gelu",
    )
    text = text_config(hidden=32, layers=2, heads=4, projection_dim=64)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64))
