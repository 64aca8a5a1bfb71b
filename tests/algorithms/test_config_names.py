"""Every name a config refers to, and the cross-field constraints, are checked when the config is
built: before a model loads or a run directory is touched."""

import pytest

from diffexp.algorithms.config import ConfigError, load_config
from tests.helpers import NAMED

RUN = NAMED  # what every run must name (the core has no default model, prompt set or reward)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reward.name": "embedded_aesthetc"}, "reward.name: unknown reward 'embedded_aesthetc'"),
        ({"reward.weights": {"x": 1.0}}, "reward.weights.x: unknown reward 'x'"),
        ({"reward.weights": {"a": {"reward": "nope", "weight": 2}}}, "reward.weights.a: unknown reward 'nope'"),
        ({"run.eval_rewards": ["embedded_aesthetic", "typo"]}, "run.eval_rewards: unknown reward 'typo'"),
        ({"prompts.set": "embedded_relation"}, "prompts.set: unknown prompt set 'embedded_relation'"),
        ({"run.evaluators": ["nope"]}, "run.evaluators: unknown evaluator 'nope'"),
        ({"exploration.strategy": "difexp"}, "unknown exploration strategy 'difexp'"),
        (
            {"exploration.strategy": "sde_window", "sample.num_steps": 10, "train.timestep_window": [0.6, 1.0]},
            "outside train.timestep_window",
        ),
    ],
)
@pytest.mark.parametrize("algorithm", ["ddpo", "grpo", "alignprop"])
def test_a_wrong_name_or_constraint_is_refused_when_the_config_is_built(tmp_path, overrides, message, algorithm):
    if "train.timestep_window" in overrides and algorithm == "alignprop":
        pytest.skip("AlignProp has no timestep window")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, {**RUN, "algorithm": algorithm, "run.output_dir": str(tmp_path), **overrides})
    assert not any(tmp_path.iterdir())


def test_overlapping_windows_and_registered_names_pass():
    config = load_config(
        None,
        {
            **RUN,
            "exploration.strategy": "sde_window",
            "sample.num_steps": 10,
            "train.timestep_window": [0.0, 0.3],
            "reward.weights": {"brightness": 1.0, "b": {"reward": "jpeg_compressibility", "weight": 0.5}},
        },
    )
    assert config.exploration.strategy == "sde_window"
