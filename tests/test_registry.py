"""Adding to the library from outside it: the example plugin's algorithm and reward
(``tests/example_plugin``) and a toy world (pipeline, prompt set, evaluator), registered here through
the public registries, train one epoch on the tiny SD 1.5 twin, with no core file edited."""

from __future__ import annotations

import pandas as pd
import pytest

from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.registry import ALGORITHMS, register_algorithm
from diffexp.algorithms.runner import run
from diffexp.evaluation import evaluators as evaluator_registry
from diffexp.evaluation import register_evaluator
from diffexp.models import PIPELINES, register_pipeline
from diffexp.prompts.base import Prompt
from diffexp.prompts.sets import PROMPT_SETS, register_prompt_set
from diffexp.rewards import REWARDS, register_reward
from tests.example_plugin.algorithm import LastStepConfig, LastStepReinforce
from tests.example_plugin.reward import Redness


def share_red(images, prompts):
    return {
        "eval_toy_share_red": float((images[:, 0].mean(dim=(1, 2)) > images[:, 1:].mean(dim=(1, 2, 3))).float().mean())
    }


@pytest.fixture
def toy_world():
    from diffexp.models.twins import tiny_sd15_pipeline

    register_algorithm("example_last_step", LastStepConfig)(LastStepReinforce)
    register_pipeline("toy-twin")(lambda dtype="fp32", device="cpu", seed=0: tiny_sd15_pipeline(seed=1))
    register_prompt_set("toy_colours")(
        lambda: [Prompt("a red square", ("red square",)), Prompt("a blue circle", ("blue circle",))]
    )
    register_reward("example_redness")(Redness)
    register_evaluator("toy_truth", prompt_sets=("toy_colours",))(lambda: share_red)
    yield
    ALGORITHMS.unregister("example_last_step")
    PIPELINES.unregister("toy-twin")
    PROMPT_SETS.unregister("toy_colours")
    REWARDS.unregister("example_redness")
    evaluator_registry.EVALUATORS.unregister("toy_truth")


def test_a_toy_algorithm_and_world_train_one_epoch(toy_world, tmp_path):
    config = load_config(
        None,
        {
            "algorithm": "example_last_step",
            "model.pretrained": "toy-twin",
            "sample.num_steps": 3,
            "sample.batch_size": 4,
            "sample.num_batches_per_epoch": 1,
            "sample.samples_per_prompt": 2,
            "prompts.set": "toy_colours",
            "prompts.eval_options": {},
            "reward.name": "example_redness",
            "run.num_epochs": 1,
            "run.eval_every": 1,
            "run.eval_num_prompts": 2,
            "run.loggers": ["csv"],
            "run.threads": 1,
            "run.output_dir": str(tmp_path),
            "run.name": "toy",
        },
    )
    assert type(config) is LastStepConfig
    module = run(config)
    assert isinstance(module, LastStepReinforce) and module.reward_queries == 4
    df = pd.read_csv(tmp_path / "toy" / "csv" / "metrics.csv")
    assert list(df["step"]) == [0, 4]  # the base model's evaluation, then the epoch
    assert df["eval_toy_share_red"].notna().all()  # the world's evaluator ran on its prompt set without being named
    assert df["loss"].notna().iloc[1] and df["reward_mean"].notna().iloc[1]
    trained = [p for n, p in module.unet.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in trained)  # the toy update moved the adapter


def test_unknown_algorithm_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown algorithm 'nope'; registered: \['alignprop', 'ddpo'"):
        load_config(None, {"algorithm": "nope"})


def test_an_algorithm_whose_config_names_another_is_refused():
    with pytest.raises(ValueError, match="must default to 'toy_other'"):
        register_algorithm("toy_other", LastStepConfig)(LastStepReinforce)


def test_a_registration_brings_its_report_label_colour_and_place():
    from diffexp.exploration import STRATEGIES, register_strategy
    from diffexp.reporting.labels import algorithm_order, strategy_label, strategy_order, strategy_palette

    colours = [e.colour for e in STRATEGIES.entries()]
    assert all(colours) and len(set(colours)) == len(colours)  # every built-in has its own colour
    assert strategy_order()[:4] == ["baseline", "cfg", "phrase", "diffexp"] and strategy_label("cfg") == "CFG only"
    assert algorithm_order() == ["ddpo", "grpo", "alignprop"]
    register_strategy("toy_explore", label="Toy exploration", colour="#123456")(lambda c: None)
    try:
        assert strategy_label("toy_explore") == "Toy exploration" and strategy_order()[-1] == "toy_explore"
        assert strategy_palette(["baseline", "toy_explore"])["toy_explore"] == "#123456"
    finally:
        STRATEGIES.unregister("toy_explore")
    assert strategy_label("toy_explore") == "toy_explore"  # a name without a registration stands for itself


def test_unknown_names_are_refused_by_every_registry_with_the_registered_ones():
    from diffexp.evaluation import EVALUATORS
    from diffexp.exploration import STRATEGIES
    from diffexp.registry import UnknownNameError

    for registry in (PIPELINES, PROMPT_SETS, REWARDS, EVALUATORS, STRATEGIES, ALGORITHMS):
        with pytest.raises(UnknownNameError, match=rf"unknown {registry.kind} 'nope'; registered: \["):
            registry["nope"]
        assert registry.names() and "nope" not in registry


def test_a_plugin_strategy_is_found_by_a_config_without_the_plugin_imported_first(monkeypatch):
    """The strategy registry loads plugins like every other (a plugin's strategy failed ExplorationConfig)."""
    from diffexp.exploration import STRATEGIES, ExplorationConfig

    def fake_plugins():
        if "plugged" not in STRATEGIES._entries:
            STRATEGIES.register("plugged", lambda c: None, label="Plugged")

    monkeypatch.setattr("diffexp.registry.load_plugins", fake_plugins)
    try:
        assert ExplorationConfig(strategy="plugged").strategy == "plugged"
    finally:
        STRATEGIES.unregister("plugged")
