"""The core's defaults name no world: a run names its model, prompt set and reward; a prompt set
brings its own held-out options; a reward section is parsed into its parts in one place."""

import pytest

from diffexp.algorithms.config import REQUIRED, ConfigError, RewardConfig, describe_config, load_config
from diffexp.algorithms.ddpo import DDPOConfig
from diffexp.algorithms.run_identity import reward_parts, run_tags
from diffexp.algorithms.run_record import IDENTITY_TAGS
from diffexp.cli import main
from diffexp.prompts.sets import PROMPT_SETS, register_prompt_set
from diffexp.rewards.parts import RewardPart
from tests.helpers import NAMED

RUN = NAMED  # what every run must name (the core has no default model, prompt set or reward)


@pytest.mark.parametrize(
    ("left_out", "expected"),
    [
        ("model.pretrained", "model: Field required"),
        ("prompts.set", "prompts.set: Field required"),
        ("reward.name", "reward: Field required"),
    ],
)
def test_a_run_must_name_its_model_prompts_and_reward(left_out, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, {k: v for k, v in RUN.items() if k != left_out})
    with pytest.raises(ConfigError, match="give reward.name .* or reward.weights"):
        load_config(None, {**RUN, "reward.name": None})


def test_no_core_default_names_the_embedded_world():
    text = describe_config(DDPOConfig)
    assert "embedded" not in text.split("#")[0]  # values, not the comments
    for field in ("pretrained", "set"):
        assert any(line.strip().startswith(f"{field}: {REQUIRED}") for line in text.splitlines()), field


def test_print_config_without_a_config_shows_what_is_required(capsys):
    assert main(["train", "--print-config"]) == 0
    assert f"pretrained: {REQUIRED}" in capsys.readouterr().out
    assert main(["train", "--algorithm", "alignprop", "--print-config"]) == 0
    assert "truncation:" in capsys.readouterr().out


def test_a_prompt_set_brings_its_own_heldout_options():
    embedded = load_config(None, {**RUN, "prompts.set": "embedded_objects"})
    assert embedded.prompts.eval_options == {"split": "heldout"}  # the embedded world registers it
    assert load_config(None, RUN).prompts.eval_options == {}  # a list has none
    assert load_config(None, {**RUN, "prompts.set": "drawbench"}).prompts.eval_options == {}
    chosen = load_config(None, {**RUN, "prompts.set": "embedded_objects", "prompts.eval_options": {"split": "train"}})
    assert chosen.prompts.eval_options == {"split": "train"}
    explicit = load_config(None, {**RUN, "prompts.set": "embedded_objects", "prompts.eval_options": {}})
    assert explicit.prompts.eval_options == {}  # said, not defaulted


def test_a_plugins_prompt_set_declares_its_heldout_options():
    register_prompt_set("toy_split", heldout_options={"fold": 2})(lambda fold=0: [])
    try:
        assert load_config(None, {**RUN, "prompts.set": "toy_split"}).prompts.eval_options == {"fold": 2}
    finally:
        PROMPT_SETS.unregister("toy_split")


def test_reward_parts_are_parsed_once_for_every_user():
    single = RewardConfig(name="brightness", options={"scale": 2})
    assert single.parts() == [RewardPart("brightness", "brightness", 1.0, {"scale": 2})]
    assert single.single == "brightness" and single.describe() == "brightness"
    summed = RewardConfig(weights={"brightness": 0.5, "b": {"reward": "jpeg_compressibility", "weight": 2, "q": 1}})
    assert summed.parts() == [
        RewardPart("brightness", "brightness", 0.5, {}),
        RewardPart("b", "jpeg_compressibility", 2.0, {"q": 1}),
    ]
    assert summed.single is None and summed.describe() == "0.5*brightness+2*b"
    assert summed.weights["b"]["weight"] == 2  # parsing does not consume the config's own mapping
    config = load_config(None, {**RUN, "reward.weights": summed.weights})
    assert reward_parts(config.reward) == ["brightness", "jpeg_compressibility"]
    assert run_tags(config)["reward"] == "0.5*brightness+2*b"


def test_run_tags_are_the_identity_tags_the_reports_read():
    assert tuple(run_tags(load_config(None, RUN))) == IDENTITY_TAGS
