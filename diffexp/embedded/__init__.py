"""The embedded world: a tiny procedural text-to-image world of coloured shapes.

It replaces the paper's large-scale setting (Stable Diffusion + LAION aesthetic
predictor + animal prompts) with something a small model can learn on one GPU,
while keeping every quantity measurable from pixels:

- ``scenes``: procedural 32x32 scenes, their captions and ground-truth labels;
- ``ground_truth``: the pixel-only judge of "does this image match its caption";
- ``aesthetic_rule``: the hidden procedural "aesthetic" score a reward model learns;
- ``prompt_sets``: the "objects" and "relations" prompt sets with train/held-out splits;
- ``architecture``, ``pipeline``, ``training``, ``reward_training``, ``settings``: the generator
  and the reward models, and how they were trained (``diffexp embedded train``);
- ``rewards``: the learned alignment and aesthetic rewards, and the oracle reward;
- ``heldout_metrics``: what the world measures on a run's evaluation samples;
- ``measurements``: the model card's figures (``diffexp embedded evaluate``);
- ``plugin``: the registrations that plug the world into the library.
"""

import hashlib
from functools import lru_cache
from pathlib import Path

#: The shipped models (generator pipeline, reward CLIP, aesthetic predictor) and their model card.
WEIGHTS_DIR = Path(__file__).parent / "weights"


@lru_cache(maxsize=1)
def weights_fingerprint() -> str:
    """12 hex digits identifying the shipped weights (generator and reward models): part of a
    run's config hash, so results of an older shipped model are never taken for this one's."""
    digest = hashlib.sha256()
    for path in sorted(WEIGHTS_DIR.rglob("*.safetensors")):
        digest.update(str(path.relative_to(WEIGHTS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
