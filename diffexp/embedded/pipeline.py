"""Load the shipped embedded-world generator (a StableDiffusionPipeline saved with save_pretrained)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from diffexp.models.pipelines import ModelNotFoundError, load_pipeline

WEIGHTS_DIR = Path(__file__).parent / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"


@lru_cache(maxsize=1)
def weights_fingerprint() -> str:
    """12 hex digits identifying the shipped weights (generator and reward models): part of a
    run's config hash, so results of an older shipped model are never taken for this one's."""
    digest = hashlib.sha256()
    for path in sorted(WEIGHTS_DIR.rglob("*.safetensors")):
        digest.update(str(path.relative_to(WEIGHTS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_world_pipeline(dtype: str = "fp32", device: str = "cpu", path: str | Path | None = None):
    """The embedded generator; weights ship in fp16 and are upcast to ``dtype`` (fp32 on CPU)."""
    path = Path(path) if path else PIPELINE_DIR
    if not (path / "model_index.json").exists():
        raise ModelNotFoundError(
            f"the embedded world model is missing at {path}. It ships with the repository: restore it with "
            f"`git checkout -- {path}`, or retrain it with `diffexp embedded train` (about an hour on 2 CPU cores)."
        )
    return load_pipeline(path, dtype=dtype, device=device)
