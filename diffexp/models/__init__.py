"""Models: pipelines by name (tiny random twins built in; worlds add theirs) or from a hub id or
folder, the offline tokenizer, LoRA."""

from __future__ import annotations

from collections.abc import Callable

from diffusers import DiffusionPipeline

from diffexp.models.pipelines import ModelNotFoundError, denoiser_of, load_pipeline, parse_dtype
from diffexp.registry import Registry

#: name -> factory ``(dtype, device, seed) -> pipeline``; a name is looked up before any folder or hub id
PIPELINES: Registry[Callable[..., DiffusionPipeline]] = Registry("pipeline")


def register_pipeline(name: str, **metadata):
    """Decorator registering a pipeline factory ``(dtype: str, device: str, seed: int) -> pipeline``."""
    return PIPELINES.register(name, **metadata)


def pipeline_names() -> list[str]:
    return PIPELINES.names()


def get_pipeline(source: str, dtype: str = "fp32", device: str = "cpu", seed: int = 0) -> DiffusionPipeline:
    """A pipeline from a registered name ('tiny-sd15'/'tiny-sdxl'/'tiny-sd3': random twins; 'sd15-sized': SD
    1.5's real sizes with random weights; plugins' names, e.g. 'embedded'), a local diffusers
    folder or a cached hub id."""
    if source in PIPELINES:
        return PIPELINES[source](dtype=dtype, device=device, seed=seed)
    return load_pipeline(source, dtype=dtype, device=device)


def _cast(pipe: DiffusionPipeline, dtype: str, device: str) -> DiffusionPipeline:
    torch_dtype = parse_dtype(dtype)
    return pipe.to(device) if torch_dtype == denoiser_of(pipe).dtype else pipe.to(device, torch_dtype)


def _twin(build_name: str):
    def factory(dtype: str = "fp32", device: str = "cpu", seed: int = 0) -> DiffusionPipeline:
        from diffexp.models import twins

        return _cast(getattr(twins, build_name)(seed), dtype, device)

    return factory


register_pipeline("tiny-sd15")(_twin("tiny_sd15_pipeline"))
register_pipeline("tiny-sdxl")(_twin("tiny_sdxl_pipeline"))
register_pipeline("sd15-sized")(_twin("sd15_sized_pipeline"))
register_pipeline("tiny-sd3")(_twin("tiny_sd3_pipeline"))
register_pipeline("tiny-sd3-t5")(_twin("tiny_sd3_t5_pipeline"))
register_pipeline("tiny-flux")(_twin("tiny_flux_pipeline"))

__all__ = [
    "PIPELINES",
    "ModelNotFoundError",
    "get_pipeline",
    "load_pipeline",
    "parse_dtype",
    "pipeline_names",
    "register_pipeline",
]
