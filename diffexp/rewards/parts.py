"""A reward config's parts, parsed in one place: ``{"aesthetic": 1.0, "ps": {"weight": 0.1,
"reward": "pickscore", "model": "/w/ps"}}`` -> one :class:`RewardPart` per key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class RewardPart(NamedTuple):
    part: str  #: the key of the weighted sum (the reward's name unless ``reward`` says otherwise)
    reward: str  #: the registered reward
    weight: float
    options: dict[str, Any]  #: the reward's constructor options


def parse_weights(weights: Mapping[str, float | Mapping[str, Any]]) -> list[RewardPart]:
    """Each key names a part and, unless its options say ``reward: <name>``, the registered reward;
    the value is the part's weight or a mapping of ``weight`` (default 1) and the reward's options."""
    parts = []
    for key, value in weights.items():
        options = dict(value) if isinstance(value, Mapping) else {"weight": value}
        weight = float(options.pop("weight", 1.0))
        parts.append(RewardPart(str(key), str(options.pop("reward", key)), weight, options))
    return parts
