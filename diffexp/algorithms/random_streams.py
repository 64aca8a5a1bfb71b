"""A run's random streams: one generator per source of randomness, seeded from the run seed.

Common random numbers across arms: the prompts drawn, the initial noise and every step's noise come
from streams that an exploration strategy never touches, so two arms of one seed (baseline and
DiffExp, say) draw the same prompts and the same noise for as long as their inputs agree, and their
difference measures the strategy rather than the luck of the draw. Exploration's own draws (CFG
scales, phrase weights, noise windows) have a stream of their own.
"""

from __future__ import annotations

import torch

#: stream name -> offset added to ``seed * 1000 + rank`` (offsets keep the streams independent)
STREAMS = {"prompts": 0, "noise": 101, "exploration": 211}


class RandomStreams:
    """Named ``torch.Generator`` s: ``prompts`` (training prompts and any per-batch training draw),
    ``noise`` (initial latents and the sampler's per-step noise), ``exploration`` (the strategy)."""

    def __init__(self):
        self.generators = {name: torch.Generator() for name in STREAMS}

    def seed(self, seed: int, rank: int = 0) -> None:
        for name, offset in STREAMS.items():
            self.generators[name].manual_seed(seed * 1000 + rank + offset * 1_000_003)

    @property
    def prompts(self) -> torch.Generator:
        return self.generators["prompts"]

    @property
    def noise(self) -> torch.Generator:
        return self.generators["noise"]

    @property
    def exploration(self) -> torch.Generator:
        return self.generators["exploration"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: g.get_state() for name, g in self.generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(STREAMS) - set(state))
        if missing:
            raise ValueError(
                f"the checkpoint has no state for the random streams {missing} (it was written before "
                "common random numbers across arms); start the run over with --restart"
            )
        for name, g in self.generators.items():
            g.set_state(state[name])
