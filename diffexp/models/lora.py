"""LoRA adapters on the denoiser, a UNet or a flow transformer (peft), saved and loaded in the diffusers LoRA format.

Only adapter parameters are trainable after :func:`add_lora`. Saving uses the pipeline class's
``save_lora_weights`` so the file loads with ``pipe.load_lora_weights`` in plain diffusers.
"""

from __future__ import annotations

import os

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from pydantic import BaseModel, ConfigDict, Field

from diffexp.models.pipelines import denoiser_of, is_flow_model

ADAPTER_NAME = "default"


class LoraSettings(BaseModel):
    """LoRA hyper-parameters (ddpo-pytorch uses rank 4 on the attention projections)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rank: int = Field(4, ge=1, description="adapter rank r")
    alpha: float | None = Field(None, gt=0, description="scaling numerator (alpha / r); default alpha = r")
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"], description="UNet module names to adapt"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def add_lora(unet: torch.nn.Module, settings: LoraSettings | None = None) -> list[torch.nn.Parameter]:
    """Freeze the UNet, attach a LoRA adapter, and return the (only) trainable parameters."""
    settings = settings or LoraSettings()
    unet.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha or settings.rank,
        init_lora_weights="gaussian",
        target_modules=settings.target_modules,
        lora_dropout=settings.dropout,
    )
    try:
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    except ValueError as err:
        raise ValueError(
            f"could not attach LoRA to the UNet (target_modules={settings.target_modules}): {err}"
        ) from err
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)


def save_lora(pipe: DiffusionPipeline, directory: str | os.PathLike) -> None:
    """Write the UNet adapter as ``pytorch_lora_weights.safetensors`` in diffusers' format.

    The adapter's config (rank, alpha, targets) is stored as metadata: without it a loader
    assumes alpha = rank and silently rescales the adapter.
    """
    denoiser = denoiser_of(pipe)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora_state_dict(denoiser).items()}
    metadata = denoiser.peft_config[ADAPTER_NAME].to_dict()
    part = "transformer" if is_flow_model(pipe) else "unet"  # the keyword each pipeline's saver takes
    type(pipe).save_lora_weights(
        directory, safe_serialization=True, **{f"{part}_lora_layers": state, f"{part}_lora_adapter_metadata": metadata}
    )


def load_lora(pipe: DiffusionPipeline, directory: str | os.PathLike, adapter_name: str = ADAPTER_NAME) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers-format UNet LoRA) into ``pipe``."""
    pipe.load_lora_weights(str(directory), adapter_name=adapter_name)
