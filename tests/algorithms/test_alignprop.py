"""AlignProp: truncation modes (gradients only through the last K steps), runs, reward checks."""

import pandas as pd
import pytest
import torch

from diffexp.algorithms.alignprop import TruncationConfig, truncation_mask
from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.runner import run
from diffexp.models.lora import add_lora
from diffexp.models.twins import tiny_sd15_pipeline
from diffexp.sampling.plan import SamplingPlan
from diffexp.sampling.trajectory import TrajectorySampler
from tests.helpers import reference_truncated_grads

BASE = {
    "algorithm": "alignprop",
    "model.pretrained": "tiny-sd15",
    "sample.num_steps": 3,
    "sample.batch_size": 2,
    "sample.num_batches_per_epoch": 2,
    "prompts.set": "list",
    "prompts.prompts": ["a cat", "a dog"],
    "prompts.eval_options": {},
    "reward.name": "brightness",
    "train.truncation.k": 1,
    "run.num_epochs": 2,
    "run.eval_every": 2,
    "run.eval_num_prompts": 1,
    "run.loggers": ["csv"],
    "run.threads": 1,
}


def test_truncation_masks_are_suffixes_drawn_once():
    g = torch.Generator().manual_seed(0)
    fixed = truncation_mask(TruncationConfig(mode="fixed", k=2), 3, 5, g)
    assert fixed.tolist() == [[False, False, False, True, True]] * 3
    for _ in range(20):
        uni = truncation_mask(TruncationConfig(mode="uniform", k_min=1, k_max=4), 6, 5, g)
        assert (uni == uni[0]).all()  # one K for the whole batch
        per = truncation_mask(TruncationConfig(mode="per_sample", k_min=1, k_max=4), 6, 5, g)
        for row in per.int().tolist():  # a contiguous suffix: 0...0 1...1
            k = sum(row)
            assert 1 <= k <= 4 and row == [0] * (5 - k) + [1] * k
    draws = {
        tuple(truncation_mask(TruncationConfig(mode="per_sample", k_min=1, k_max=4), 8, 5, g).sum(1).tolist())
        for _ in range(5)
    }
    assert any(len(set(d)) > 1 for d in draws)  # per-sample K really differs between samples


@pytest.mark.parametrize("mode", ["fixed", "uniform", "per_sample"])
def test_gradients_only_through_last_k_steps(mode):
    pipe = tiny_sd15_pipeline(seed=1)
    params = add_lora(pipe.unet)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    steps, scale = 4, 5.0
    sampler = TrajectorySampler(pipe, num_steps=steps, eta=0.0)
    prompts = ["a cat", "a dog", "a bird"]
    plan = SamplingPlan(prompts, prompts, torch.full((3, steps), scale))
    config = TruncationConfig(mode=mode, k=2, k_min=1, k_max=3)
    mask = truncation_mask(config, 3, steps, torch.Generator().manual_seed(3))
    traj = sampler.sample(plan, torch.Generator().manual_seed(0), grad_steps=mask)
    traj.images.sum().backward()
    ours = torch.cat([p.grad.flatten() for p in params])
    reference = reference_truncated_grads(pipe, params, traj, mask.sum(1).tolist(), scale)
    assert reference.abs().sum() > 0
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_alignprop_run_raises_brightness_and_counts_queries(tmp_path):
    cfg = load_config(
        None,
        {
            **BASE,
            "run.output_dir": str(tmp_path),
            "run.name": "a",
            "run.num_epochs": 3,
            "exploration.strategy": "diffexp",
            "train.learning_rate": 3e-3,
        },
    )
    module = run(cfg)
    df = pd.read_csv(tmp_path / "a" / "csv" / "metrics.csv")
    assert module.reward_queries == 12 and list(df["reward_queries"]) == [0, 4, 8, 12]  # 0: the base model's evaluation
    train = df[df["epoch"] >= 0]
    assert train["truncation_k_mean"].eq(1).all() and train["grad_norm"].gt(0).all()
    assert df["eval_reward_mean"].notna().iloc[-1]


def test_every_differentiable_reward_is_listed():
    from diffexp.algorithms.alignprop import differentiable_rewards

    listed = differentiable_rewards()
    for name in ("embedded_aesthetic", "embedded_alignment", "aesthetic", "pickscore", "hps", "hpsv2.1"):
        assert name in listed, name
    assert "jpeg_compressibility" not in listed


def test_non_differentiable_reward_is_refused(tmp_path):
    cfg = load_config(None, {**BASE, "reward.name": "jpeg_compressibility", "run.output_dir": str(tmp_path)})
    from diffexp.algorithms.alignprop import AlignProp

    with pytest.raises(ValueError, match="not differentiable.*differentiable rewards: .*embedded_aesthetic"):
        AlignProp(cfg)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"train.truncation.k": 9}, "exceeds sample.num_steps"),
        ({"train.truncation.k_min": 3, "train.truncation.k_max": 2}, "k_min"),
        ({"train.gradient_accumulation_steps": 3}, "multiple of"),
        ({"train.truncation.mode": "every_step"}, "train.truncation.mode"),
    ],
)
def test_bad_alignprop_config(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_config(None, {**BASE, **overrides})
