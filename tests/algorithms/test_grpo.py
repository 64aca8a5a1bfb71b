"""GRPO on the tiny SD 1.5 twin: its reduction to DDPO, group advantages, and the KL to the base model."""

import pandas as pd
import pytest
import torch

from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.registry import get_algorithm
from diffexp.algorithms.runner import run
from tests.algorithms.test_ddpo import BASE

PPO = {"train.learning_rate": 3e-3, "train.clip_range": 1e-3, "train.timestep_fraction": 1.0, "run.seed": 4}


def grpo_config(tmp_path, name="g", **extra):
    base = {k: v for k, v in BASE.items() if not k.startswith("train.stat_tracking")}
    return load_config(
        None, {**base, "algorithm": "grpo", "run.output_dir": str(tmp_path), "run.name": name, **PPO, **extra}
    )


@pytest.mark.slow
def test_without_kl_and_with_groups_of_one_it_is_ddpo_with_batch_normalised_advantages(tmp_path):
    """Two runs, GRPO (beta 0, samples_per_prompt 1) and DDPO (per_prompt false), same seeds and PPO
    settings: the same rewards, losses and ratios epoch by epoch."""
    run(grpo_config(tmp_path, "grpo", **{"train.beta": 0.0, "run.deterministic": True}))
    ddpo = {**BASE, **PPO, "train.stat_tracking.per_prompt": False, "run.deterministic": True}
    run(load_config(None, {**ddpo, "run.output_dir": str(tmp_path), "run.name": "ddpo"}))
    grpo, ddpo = (pd.read_csv(tmp_path / name / "csv" / "metrics.csv") for name in ("grpo", "ddpo"))
    assert len(grpo) == len(ddpo) == 3
    assert (grpo["kl"].iloc[1:] == 0).all()
    for column in ["reward_mean", "loss", "approx_kl", "clipfrac", "ratio", "grad_norm", "eval_reward_mean"]:
        pd.testing.assert_series_equal(grpo[column], ddpo[column], check_exact=False, rtol=1e-6, atol=1e-9)


def test_the_kl_term_is_to_the_base_model(tmp_path):
    """The KL that GRPO's loss adds equals the Gaussian KL between the trained module's step and the
    same step of a separately built base pipeline (no adapter at all), not of the module itself."""
    from diffexp.algorithms.losses import gaussian_kl
    from diffexp.exploration import build_strategy
    from diffexp.models.twins import tiny_sd15_pipeline
    from diffexp.sampling.trajectory import TrajectorySampler

    config = grpo_config(tmp_path, **{"train.beta": 0.5, "sample.num_steps": 4})
    module = get_algorithm("grpo").module_class(config)
    module.sampler = module.make_sampler()
    with torch.no_grad():
        for name, p in module.unet.named_parameters():
            if "lora_B" in name:  # B starts at zero (the adapter is a no-op): move it
                p.copy_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    plan = build_strategy("baseline").plan(["a cat", "a dog"], 4, g)
    with torch.no_grad():
        traj = module.sampler.sample(plan, g)
    steps = torch.tensor([1, 2])
    old = traj.log_probs[torch.arange(2), steps]
    loss, info, _ = module.step_loss(traj, steps, old, torch.tensor([1.0, -1.0]), None)
    base = TrajectorySampler(tiny_sd15_pipeline(seed=0), num_steps=4, eta=1.0)
    with torch.no_grad():
        trained, reference = module.sampler.step_distribution(traj, steps), base.step_distribution(traj, steps)
    expected = gaussian_kl(trained.mean, reference.mean, trained.std).mean()
    assert expected.item() > 1e-6  # the adapter moved the policy
    assert info["kl"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(info["kl"].item() * 0.5, rel=1e-6)  # ratio 1: the surrogate is 0
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in module.unet.named_parameters())  # adapter back on


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="reference policy"):
        grpo_config(tmp_path, **{"model.use_lora": False})
    with pytest.raises(ConfigError, match="stat_tracking"):
        grpo_config(tmp_path, **{"train.stat_tracking.per_prompt": True})
    config = grpo_config(tmp_path, **{"sample.samples_per_prompt": 2})
    assert config.train.beta == 0.04 and config.train.clip_range == 1e-3 and config.algorithm == "grpo"
