"""Adding a strategy, an algorithm and a reward is one module each: the package
``tests/example_plugin`` (outside ``diffexp/``) registers them through the ``diffexp.plugins``
entry-point group, and ``diffexp sample``, ``diffexp train`` and ``diffexp report`` use them,
with their labels and colour, without a file of ``diffexp/`` naming them."""

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from diffexp import plugins
from diffexp.cli import main

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("example_alternating", "example_last_step", "example_redness")


@pytest.fixture
def example_plugin(monkeypatch):
    from diffexp.algorithms.registry import ALGORITHMS
    from diffexp.exploration import STRATEGIES
    from diffexp.rewards import REWARDS

    entry = EntryPoint(name="example", value="tests.example_plugin.plugin", group=plugins.GROUP)
    real = plugins.entry_points

    def with_example(group):
        found = list(real(group=group))
        return [*found, entry] if group == plugins.GROUP else found

    monkeypatch.setattr(plugins, "entry_points", with_example)
    monkeypatch.setattr(plugins, "_loaded", False)
    yield
    for registry, name in zip((STRATEGIES, ALGORITHMS, REWARDS), NAMES):
        registry.unregister(name)
    sys.modules.pop("tests.example_plugin.plugin", None)


def test_no_library_file_names_the_example():
    sources = "\n".join(p.read_text() for p in (ROOT / "diffexp").rglob("*.py"))
    assert not [name for name in NAMES if name in sources]


@pytest.mark.slow
def test_sample_train_and_report_use_a_plugins_strategy_algorithm_and_reward(example_plugin, tmp_path):
    from tests.example_plugin.plugin import STRATEGY_COLOUR, STRATEGY_LABEL

    grid = tmp_path / "grid.png"
    sample = ["sample", "--pipeline", "tiny-sd15", "--prompt", "a red circle", "--strategy", "example_alternating"]
    assert main([*sample, "--per-prompt", "2", "--steps", "2", "--out", str(grid)]) == 0 and grid.is_file()
    runs = tmp_path / "runs"
    common = [
        "--algorithm",
        "example_last_step",
        "model.pretrained=tiny-sd15",
        "reward.name=example_redness",
        "prompts.set=simple_animals",
        "prompts.eval_options={}",
        "sample.num_steps=3",
        "sample.batch_size=4",
        "sample.num_batches_per_epoch=1",
        "sample.samples_per_prompt=2",
        "run.num_epochs=2",
        "run.eval_every=1",
        "run.eval_num_prompts=2",
        "run.loggers=[csv, mlflow]",
        "run.threads=1",
        f"run.output_dir={runs}",
    ]
    for strategy in ("baseline", "example_alternating"):
        assert main(["train", *common, f"exploration.strategy={strategy}", f"run.name={strategy}"]) == 0
    report = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(report), "--reps", "50"]) == 0
    page = (report / "index.html").read_text()
    assert STRATEGY_LABEL in page and "Last-step REINFORCE" in page and "redness" in page
    svgs = "".join(p.read_text() for p in (report / "figures").glob("*.svg"))
    assert STRATEGY_COLOUR in svgs.lower()
