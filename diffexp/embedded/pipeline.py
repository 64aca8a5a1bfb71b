"""Load the shipped embedded-world generator (a StableDiffusionPipeline saved with save_pretrained)."""

from __future__ import annotations

from pathlib import Path

from diffexp.embedded import WEIGHTS_DIR
from diffexp.models.pipelines import ModelNotFoundError, load_pipeline

PIPELINE_DIR = WEIGHTS_DIR / "pipeline"


def load_world_pipeline(dtype: str = "fp32", device: str = "cpu", path: str | Path | None = None):
    """The embedded generator; weights ship in fp16 and are upcast to ``dtype`` (fp32 on CPU)."""
    path = Path(path) if path else PIPELINE_DIR
    if not (path / "model_index.json").exists():
        raise ModelNotFoundError(
            f"the embedded world model is missing at {path}. It ships with the repository: restore it with "
            f"`git checkout -- {path}`, or retrain it with `diffexp embedded train` (about an hour on 2 CPU cores)."
        )
    return load_pipeline(path, dtype=dtype, device=device)
