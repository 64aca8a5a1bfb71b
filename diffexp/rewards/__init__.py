"""Rewards: one interface (images in [0, 1] + original prompts -> scores), registered by name.

Importing this package registers the real rewards (``aesthetic``, ``pickscore``, ``hps``,
``hpsv2.1``, ``jpeg_compressibility``, ``jpeg_incompressibility``), the analytic ``brightness``
and the embedded world's ``embedded_alignment`` and ``embedded_aesthetic``; models load lazily.
"""

from diffexp.rewards.base import REWARDS, Reward, WeightedSum, build_reward, build_weighted_sum, register_reward
from diffexp.rewards import aesthetic, hps, jpeg, pickscore, simple  # noqa: F401  (register the rewards)
from diffexp.embedded import rewards as _embedded_rewards  # noqa: F401,E402
from diffexp.embedded import world_evaluator as _embedded_evaluator  # noqa: F401,E402
from diffexp.rewards.loading import RewardWeightsNotFound, UnsafeCheckpoint

__all__ = [
    "REWARDS",
    "Reward",
    "RewardWeightsNotFound",
    "UnsafeCheckpoint",
    "WeightedSum",
    "build_reward",
    "build_weighted_sum",
    "register_reward",
]
