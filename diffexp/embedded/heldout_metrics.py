"""What the embedded world measures on a run's evaluation samples: the evaluator registered as
``embedded_world``, the default on the world's prompt sets. The quantities the learned
rewards stand in for:

* ``eval_gt_accuracy``: share of samples that show their caption (the pixel judge of
  :mod:`diffexp.embedded.ground_truth`), the ground truth of the alignment reward;
* ``eval_gt_aesthetic``: the hidden aesthetic rule (:mod:`diffexp.embedded.aesthetic_rule`), the
  ground truth of the aesthetic reward;
* ``eval_vendi``: the Vendi score of each prompt's samples, on the image embeddings of the world's
  CLIP (the alignment reward's image tower), averaged over prompts.
"""

from __future__ import annotations

import torch

from diffexp.evaluation import register_evaluator, within_prompt_vendi

EVALUATOR = "embedded_world"


@register_evaluator(
    EVALUATOR,
    prompt_sets=("embedded_objects", "embedded_relations"),
    metrics=("eval_gt_accuracy", "eval_gt_aesthetic", "eval_vendi"),
)
class WorldEvaluator:
    def __init__(self):
        self._clip = None

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        from diffexp.embedded.rewards import WorldAlignmentReward, _features, clip_normalise

        if self._clip is None:
            self._clip = WorldAlignmentReward().model
        with torch.no_grad():
            return _features(self._clip.get_image_features(pixel_values=clip_normalise(images.float().cpu())))

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        from diffexp.embedded.aesthetic_rule import aesthetic_score
        from diffexp.embedded.ground_truth import evaluate

        images = images.detach().float().cpu()
        return {
            "eval_gt_accuracy": float(evaluate(images, prompts).mean()),
            "eval_gt_aesthetic": float(aesthetic_score(images).mean()),
            "eval_vendi": within_prompt_vendi(self.image_embeddings(images), prompts),
        }
