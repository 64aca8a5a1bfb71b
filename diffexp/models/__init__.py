"""Models: pipeline loading (hub id or folder), tiny random twins, the offline tokenizer, LoRA."""

from __future__ import annotations

from diffusers import DiffusionPipeline

from diffexp.models.pipelines import ModelNotFoundError, load_pipeline, parse_dtype

#: Names that resolve to a built-in pipeline instead of a folder or hub id.
BUILTIN_PIPELINES = ("embedded", "tiny-sd15", "tiny-sdxl", "sd15-sized")


def get_pipeline(source: str, dtype: str = "fp32", device: str = "cpu", seed: int = 0) -> DiffusionPipeline:
    """A pipeline from a built-in name ('embedded': the shipped world model; 'tiny-*': random twins;
    'sd15-sized': SD 1.5's real sizes with random weights), a local diffusers folder or a cached hub id."""
    if source == "embedded":
        from diffexp.embedded.pipeline import load_world_pipeline

        return load_world_pipeline(dtype=dtype, device=device)
    if source == "tiny-sd15":
        from diffexp.models.twins import tiny_sd15_pipeline

        return _cast(tiny_sd15_pipeline(seed), dtype, device)
    if source == "tiny-sdxl":
        from diffexp.models.twins import tiny_sdxl_pipeline

        return _cast(tiny_sdxl_pipeline(seed), dtype, device)
    if source == "sd15-sized":
        from diffexp.models.twins import sd15_sized_pipeline

        return _cast(sd15_sized_pipeline(seed), dtype, device)
    return load_pipeline(source, dtype=dtype, device=device)


__all__ = ["BUILTIN_PIPELINES", "ModelNotFoundError", "get_pipeline", "load_pipeline", "parse_dtype"]


def _cast(pipe: DiffusionPipeline, dtype: str, device: str) -> DiffusionPipeline:
    torch_dtype = parse_dtype(dtype)
    return pipe.to(device) if torch_dtype == pipe.unet.dtype else pipe.to(device, torch_dtype)
