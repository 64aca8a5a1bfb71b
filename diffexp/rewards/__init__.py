"""Rewards: one interface (images in [0, 1] + original prompts -> scores), registered by name.

Importing this package registers the real rewards (``aesthetic``, ``pickscore``, ``hps``,
``hpsv2.1``, ``jpeg_compressibility``, ``jpeg_incompressibility``) and the analytic
``brightness``; plugins register theirs (the embedded world's ``embedded_alignment``,
``embedded_aesthetic``, ...) when a reward is first looked up. Models load lazily.
"""

from diffexp.rewards import aesthetic, hps, jpeg, pickscore, simple  # noqa: F401 (importing them registers them)
from diffexp.rewards.base import (
    REWARDS,
    Reward,
    WeightedSum,
    build_reward,
    build_weighted_sum,
    ground_truth_metric,
    register_reward,
    reward_names,
)
from diffexp.rewards.loading import RewardWeightsNotFound, UnsafeCheckpoint

__all__ = [
    "REWARDS",
    "Reward",
    "RewardWeightsNotFound",
    "UnsafeCheckpoint",
    "WeightedSum",
    "build_reward",
    "ground_truth_metric",
    "build_weighted_sum",
    "register_reward",
    "reward_names",
]
