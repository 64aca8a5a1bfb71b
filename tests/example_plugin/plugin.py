"""What the entry point names: importing it registers the package's three additions."""

from diffexp.algorithms.registry import register_algorithm
from diffexp.exploration import register_strategy
from diffexp.rewards import register_reward
from tests.example_plugin.algorithm import LastStepConfig, LastStepReinforce
from tests.example_plugin.reward import Redness
from tests.example_plugin.strategy import factory

STRATEGY_LABEL, STRATEGY_COLOUR = "Alternating guidance", "#0a7e8c"
register_strategy("example_alternating", label=STRATEGY_LABEL, colour=STRATEGY_COLOUR)(factory)
register_algorithm("example_last_step", LastStepConfig, label="Last-step REINFORCE")(LastStepReinforce)
register_reward("example_redness", label="redness")(Redness)
