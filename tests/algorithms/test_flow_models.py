"""Every algorithm on the SD3 twin (a flow-matching transformer), and GRPO with an SDE-noise window."""

import pandas as pd
import pytest

from diffexp.algorithms.config import load_config
from diffexp.algorithms.runner import run

SD3 = {
    "model.pretrained": "tiny-sd3",
    "sample.num_steps": 3,
    "sample.eta": 0.7,  # the SDE's noise level (Flow-GRPO's)
    "sample.batch_size": 4,
    "sample.num_batches_per_epoch": 1,
    "prompts.set": "list",
    "prompts.prompts": ["a cat", "a (red)1.2 dog"],
    "prompts.eval_options": {},
    "reward.name": "brightness",
    "run.num_epochs": 2,
    "run.eval_every": 2,
    "run.eval_num_prompts": 1,
    "run.loggers": ["csv"],
    "run.threads": 1,
    "exploration.strategy": "diffexp",
}
PER_ALGORITHM = {
    "ddpo": {"train.batch_size": 2, "train.gradient_accumulation_steps": 1, "train.stat_tracking.min_count": 2},
    "grpo": {"train.batch_size": 2, "train.gradient_accumulation_steps": 1, "sample.samples_per_prompt": 2},
    "alignprop": {},
}


@pytest.mark.parametrize("algorithm", ["ddpo", "grpo", "alignprop"])
def test_each_algorithm_trains_a_flow_model(tmp_path, algorithm):
    overrides = {**SD3, **PER_ALGORITHM[algorithm], "algorithm": algorithm}
    module = run(load_config(None, {**overrides, "run.output_dir": str(tmp_path), "run.name": "r"}))
    df = pd.read_csv(tmp_path / "r" / "csv" / "metrics.csv")
    assert module.reward_queries == 8 and list(df["reward_queries"]) == [0, 4, 8]
    assert type(module.denoiser).__name__ == "SD3Transformer2DModel"
    assert df["eval_reward_mean"].notna().iloc[[0, -1]].all() and df["loss"].iloc[1:].notna().all()
    if algorithm != "alignprop":
        assert (df["first_step_ratio_max_dev"].iloc[1:] <= 1e-5).all()  # DiffExp's exploration replayed exactly
    # the checkpoint holds the transformer's LoRA weights only, and a longer run resumes from it
    module = run(
        load_config(None, {**overrides, "run.output_dir": str(tmp_path), "run.name": "r", "run.num_epochs": 3})
    )
    assert module.reward_queries == 12


def test_grpo_trains_only_the_noisy_steps_of_an_sde_window(tmp_path, monkeypatch):
    """On the SD 1.5 twin (DDIM: the window sets eta per step), GRPO's loss sees only steps that drew noise."""
    from diffexp.algorithms.grpo import GRPO
    from tests.algorithms.test_grpo import grpo_config

    seen = []
    original = GRPO.step_loss

    def spy(self, traj, step_index, *args):
        seen.extend(traj.noise_levels[range(len(traj)), step_index.cpu()].tolist())
        seen_steps.extend(step_index.tolist())
        return original(self, traj, step_index, *args)

    seen_steps: list[int] = []
    monkeypatch.setattr(GRPO, "step_loss", spy)
    config = grpo_config(
        tmp_path,
        **{
            "sample.num_steps": 4,
            "sample.samples_per_prompt": 2,
            "exploration.strategy": "sde_window",
            "exploration.noise_window": {"window": [0.0, 0.5], "width": None},
            "run.num_epochs": 1,
        },
    )
    run(config)
    assert seen and all(level == 1.0 for level in seen)  # eta 1 inside the window ...
    assert set(seen_steps) == {0, 1}  # ... which is the first two of four steps


def test_a_flow_models_adapter_exports_in_the_diffusers_format(tmp_path):
    """SD3's LoRA goes out as diffusers' transformer LoRA file, loads back with load_lora_weights,
    and the merged pipeline draws the trained module's images (noise-free sampler, same seed)."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    from diffexp.algorithms.export import export_run
    from diffexp.exploration import build_strategy
    from diffexp.sampling.flow_trajectory import FlowTrajectorySampler

    overrides = {**SD3, **PER_ALGORITHM["alignprop"], "algorithm": "alignprop", "train.learning_rate": 0.05}
    module = run(load_config(None, {**overrides, "run.output_dir": str(tmp_path), "run.name": "r"}))
    exported = export_run(tmp_path / "r", tmp_path / "out", merge=True)

    def draw(pipe):
        sampler = FlowTrajectorySampler(pipe, num_steps=3, eta=0.0)
        plan = build_strategy({"strategy": "baseline", "guidance_scale": 4.5}).plan(["a cat"], 3)
        with torch.no_grad():
            return sampler.sample(plan, torch.Generator().manual_seed(2)).images

    module.denoiser.eval()
    merged = StableDiffusion3Pipeline.from_pretrained(str(exported.merged), text_encoder_3=None, tokenizer_3=None)
    torch.testing.assert_close(draw(merged), draw(module.pipe), rtol=0, atol=1e-5)
