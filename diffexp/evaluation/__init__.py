"""Held-out evaluation: diversity metrics, evaluators registered by name, and the names of the
files an evaluation writes (shared by the training modules that write them and the reports that
read them back)."""

from diffexp.evaluation.artifacts import EVAL_IMAGE_DIR, EvalImage, grid_name, parse_eval_image, samples_name
from diffexp.evaluation.diversity import vendi_score, within_prompt_diversity, within_prompt_vendi
from diffexp.evaluation.evaluators import (
    EVALUATORS,
    Evaluator,
    build_evaluator,
    evaluator_metrics,
    evaluators_for_prompt_set,
    register_evaluator,
)

__all__ = [
    "EVALUATORS",
    "EVAL_IMAGE_DIR",
    "EvalImage",
    "Evaluator",
    "build_evaluator",
    "evaluator_metrics",
    "evaluators_for_prompt_set",
    "grid_name",
    "parse_eval_image",
    "register_evaluator",
    "samples_name",
    "vendi_score",
    "within_prompt_diversity",
    "within_prompt_vendi",
]
