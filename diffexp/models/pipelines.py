"""Load Stable Diffusion 1.x/2.x, SDXL, SD3/SD3.5 and FLUX.1 pipelines from a hub id or a local folder.

Loading never reaches the network unless the caller allows it: weights must be in a local folder
or in the Hugging Face cache. A missing model gives an error that says how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; choose one of {sorted(DTYPES)}") from None


def model_family(pipe: DiffusionPipeline) -> str:
    """'sd' (1.x/2.x), 'sdxl' (DDIM UNets), 'sd3' or 'flux' (flow-matching transformers)."""
    if isinstance(pipe, StableDiffusion3Pipeline):
        return "sd3"
    if isinstance(pipe, FluxPipeline):
        return "flux"
    if isinstance(pipe, StableDiffusionXLPipeline) or getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd"


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    return model_family(pipe) == "sdxl"


def is_flow_model(pipe: DiffusionPipeline) -> bool:
    return model_family(pipe) in ("sd3", "flux")


def denoiser_of(pipe: DiffusionPipeline) -> torch.nn.Module:
    """The network that is trained: the UNet, or a flow model's transformer."""
    return pipe.transformer if is_flow_model(pipe) else pipe.unet


class ModelNotFoundError(FileNotFoundError):
    """Raised when weights are neither in a local folder nor in the local Hugging Face cache."""


def _absent_components(folder: Path) -> dict:
    """Components a saved pipeline has none of (``[null, null]`` in ``model_index.json``, e.g. SD3
    without its T5 encoder), which diffusers will not load unless told; no safety checker for SD."""
    import json

    index = folder / "model_index.json"
    entries = json.loads(index.read_text()) if index.is_file() else {}
    absent = {k: None for k, v in entries.items() if isinstance(v, list) and v[0] is None}
    if "safety_checker" in entries:
        absent.update(safety_checker=None, requires_safety_checker=False)
    return absent


def load_pipeline(
    source: str | os.PathLike,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    allow_download: bool = False,
) -> DiffusionPipeline:
    """Load an SD 1.x/2.x or SDXL pipeline with a DDIM scheduler (what DDPO and AlignProp sample with),
    or an SD3/SD3.5 or FLUX.1 pipeline with its flow-matching scheduler.

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
            **(_absent_components(local) if is_local else {"safety_checker": None, "requires_safety_checker": False}),
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
    supported = (StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline)
    if not isinstance(pipe, supported):
        raise ValueError(
            f"{source} is a {type(pipe).__name__}; supported: Stable Diffusion 1.x/2.x, SDXL, SD3/SD3.5 and FLUX.1"
        )
    if not is_flow_model(pipe):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
