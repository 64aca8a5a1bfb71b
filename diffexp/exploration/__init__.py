"""Exploration strategies (DiffExp): scheduled CFG scales and random prompt-phrase weights."""

from diffexp.exploration.cfg_schedules import CFGScheduleConfig, guidance_scales
from diffexp.exploration.phrase_weighting import PhraseWeightingConfig
from diffexp.exploration.strategies import (
    STRATEGIES,
    ExplorationConfig,
    ExplorationStrategy,
    build_strategy,
    register_strategy,
)

__all__ = [
    "CFGScheduleConfig",
    "ExplorationConfig",
    "ExplorationStrategy",
    "PhraseWeightingConfig",
    "STRATEGIES",
    "build_strategy",
    "guidance_scales",
    "register_strategy",
]
