"""Load Stable Diffusion 1.x/2.x and SDXL pipelines from a hub id or a local folder.

Loading never reaches the network unless the caller allows it: weights must be in a local folder
or in the Hugging Face cache. A missing model gives an error that says how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; choose one of {sorted(DTYPES)}") from None


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    return isinstance(pipe, StableDiffusionXLPipeline) or getattr(pipe, "text_encoder_2", None) is not None


class ModelNotFoundError(FileNotFoundError):
    """Raised when weights are neither in a local folder nor in the local Hugging Face cache."""


def load_pipeline(
    source: str | os.PathLike,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    allow_download: bool = False,
) -> DiffusionPipeline:
    """Load an SD 1.x/2.x or SDXL pipeline with a DDIM scheduler (what DDPO and AlignProp sample with).

    ``source`` is a local folder written by ``save_pretrained`` or a hub id such as
    ``stable-diffusion-v1-5/stable-diffusion-v1-5`` that is already in the local cache (or
    downloadable, with ``allow_download=True``). The safety checker is not loaded.
    """
    torch_dtype = parse_dtype(dtype)
    local = Path(source).expanduser()
    is_local = local.is_dir()
    if not is_local and Path(source).suffix in {".safetensors", ".ckpt"}:
        raise ModelNotFoundError(f"single-file checkpoints are not supported; convert {source} to a diffusers folder")
    looks_like_path = str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1
    if not is_local and looks_like_path:
        raise ModelNotFoundError(f"model folder {source} does not exist")
    try:
        pipe = DiffusionPipeline.from_pretrained(
            str(local) if is_local else str(source),
            torch_dtype=torch_dtype,
            local_files_only=is_local or not allow_download,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as err:
        if is_local:
            raise ModelNotFoundError(f"could not load a diffusers pipeline from folder {local}: {err}") from err
        raise ModelNotFoundError(
            f"model {source!r} is not in the local Hugging Face cache and downloading is off.\n"
            f"  Download it on a machine with network access, e.g. `huggingface-cli download {source}`\n"
            f"  (or `hf download {source}`), then either copy the cache (HF_HOME) here or pass the\n"
            f"  downloaded folder as the model path (config field `model.pretrained`)."
        ) from err
    if not isinstance(pipe, (StableDiffusionPipeline, StableDiffusionXLPipeline)):
        raise ValueError(f"{source} is a {type(pipe).__name__}; only Stable Diffusion 1.x/2.x and SDXL are supported")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
