"""Tiny, randomly initialised twins of Stable Diffusion 1.5, SDXL, SD3 and FLUX.1, built from configs.

Same classes and wiring as the real pipelines (UNet2DConditionModel or the MMDiT/FLUX transformers,
AutoencoderKL, CLIP and T5 text encoders, DDIM or flow-matching schedulers), only narrower and
shallower, so tests exercise the real code paths without weights or network. The CLIP tokenizer is
the real SD tokenizer, rebuilt offline; T5's is a word-level stand-in built from the same shipped file.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

from diffexp.models.tokenizer import clip_text_config, clip_tokenizer, t5_encoder_config, t5_tokenizer

#: SD 1.5's scheduler config (``scheduler/scheduler_config.json``), as a DDIM scheduler.
SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def _vae(**extra) -> AutoencoderKL:
    """The twins' VAE: 4 latent channels, two blocks; ``extra`` adds config fields (SD3's)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        **extra,
    )


def tiny_sd15_pipeline(seed: int = 0, sample_size: int = 16) -> StableDiffusionPipeline:
    """An SD 1.5-architecture pipeline with random weights (images of 2*sample_size pixels)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return _sd_pipeline(unet, _vae(), CLIPTextModel(clip_text_config(32)))


def _sd_pipeline(unet, vae, text_encoder) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0, sample_size: int = 16) -> StableDiffusionXLPipeline:
    """An SDXL-architecture pipeline (two text encoders, text-time added conditioning)."""
    torch.manual_seed(seed)
    hidden_1, hidden_2, time_dim = 32, 32, 8
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden_1 + hidden_2,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 2),
        # SDXL: 6 time ids (original size, crop, target size) + the pooled text embedding.
        projection_class_embeddings_input_dim=6 * time_dim + hidden_2,
        norm_num_groups=8,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(clip_text_config(hidden_1)),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(hidden_2, projection_dim=hidden_2)),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd15_sized_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Stable Diffusion 1.5 at its real sizes (860M-parameter UNet, 512x512 images), random weights.

    For timings and memory on a GPU: same architecture and shapes as the real model, no download.
    diffusers' UNet2DConditionModel defaults are SD 1.x's, except the 768-wide cross-attention.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_config = clip_text_config(768, layers=12, heads=12)
    text_config.intermediate_size = 3072  # CLIP ViT-L/14's text tower
    return _sd_pipeline(unet, vae, CLIPTextModel(text_config))


def tiny_sd3_pipeline(seed: int = 0, sample_size: int = 16, t5: bool = False) -> StableDiffusion3Pipeline:
    """An SD3-architecture pipeline (MMDiT transformer, flow-matching Euler scheduler with SD3's
    shift, two CLIP encoders; a T5 encoder with ``t5``, else none, which SD3 allows: its tokens are
    zeros then)."""
    torch.manual_seed(seed)
    hidden = 32
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=2 * hidden,  # the CLIP embeddings, concatenated (a T5 would set it)
        caption_projection_dim=32,
        pooled_projection_dim=2 * hidden,
        pos_embed_max_size=sample_size,
    )
    vae = _vae(
        shift_factor=0.0609,  # SD3's VAE latent normalisation
        scaling_factor=1.5305,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip_text_config(hidden, projection_dim=hidden)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(hidden, projection_dim=hidden)),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        text_encoder_3=T5EncoderModel(t5_encoder_config(2 * hidden)) if t5 else None,
        tokenizer_3=t5_tokenizer() if t5 else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3_t5_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    return tiny_sd3_pipeline(seed, t5=True)


#: FLUX.1-dev's scheduler config (``scheduler/scheduler_config.json``)
FLUX_SCHEDULER_CONFIG = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, shift=3.0, use_dynamic_shifting=True
)


def tiny_flux_pipeline(seed: int = 0, sample_size: int = 16) -> FluxPipeline:
    """A FLUX.1-dev-architecture pipeline: double- and single-stream blocks, a guidance embedding,
    packed 2x2 latents, a CLIP encoder (pooled) and a T5 encoder (tokens); images of 2*sample_size px."""
    torch.manual_seed(seed)
    hidden = 32
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=hidden,  # the T5 width
        pooled_projection_dim=hidden,  # the CLIP width
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    vae = _vae(shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)  # FLUX's
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=CLIPTextModel(clip_text_config(hidden)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=T5EncoderModel(t5_encoder_config(hidden)),
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
    pipe.default_sample_size = sample_size  # the pipeline's default is 128 (1024 px with FLUX's VAE)
    pipe.set_progress_bar_config(disable=True)
    return pipe
