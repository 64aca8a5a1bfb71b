"""DDPO end to end on the tiny SD 1.5 twin: accounting, logging, checkpoint/resume, DDP."""

import contextlib
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.runner import run
from tests.helpers import NAMED

BASE = {
    "model.pretrained": "tiny-sd15",
    "sample.num_steps": 3,
    "sample.batch_size": 4,
    "sample.num_batches_per_epoch": 1,
    "train.batch_size": 2,
    "train.gradient_accumulation_steps": 1,
    "train.stat_tracking.min_count": 2,
    "train.stat_tracking.buffer_size": 4,
    "prompts.set": "list",
    "prompts.prompts": ["a cat", "a (red)1.2 dog"],
    "prompts.eval_options": {},
    "reward.name": "brightness",
    "run.num_epochs": 2,
    "run.eval_every": 2,
    "run.eval_num_prompts": 1,
    "run.loggers": ["csv"],
    "run.threads": 1,
}


def config(tmp_path, name="r", **extra):
    return load_config(None, {**BASE, "run.output_dir": str(tmp_path), "run.name": name, **extra})


def metrics(tmp_path, name="r") -> pd.DataFrame:
    return pd.read_csv(tmp_path / name / "csv" / "metrics.csv")


@pytest.mark.slow
def test_callbacks_never_read_an_evaluation_metric_of_an_earlier_epoch(tmp_path):
    """Lightning keeps a logged key's last value; an epoch without an evaluation must not pass
    the previous evaluation's figure to a callback (a pruner on eval_* would act on it)."""
    import lightning as L

    from diffexp.harness.callbacks import epoch_metrics

    seen = []

    class Capture(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            seen.append(epoch_metrics(trainer))

    run(config(tmp_path, **{"run.num_epochs": 4, "run.eval_every": 2}), extra_callbacks=[Capture()])
    assert ["eval_reward_mean" in m for m in seen] == [False, True, False, True]
    assert all("reward_mean" in m for m in seen)


@pytest.mark.slow
def test_epoch_accounting_and_logging(tmp_path):
    module = run(config(tmp_path, **{"exploration.strategy": "diffexp"}))
    df = metrics(tmp_path)
    assert module.reward_queries == 8  # 4 samples x 2 epochs, each scored once
    assert list(df["reward_queries"]) == [0, 4, 8] and list(df["step"]) == [
        0,
        4,
        8,
    ]  # x-axis = reward queries; 0: the base model
    train = df[df["epoch"] >= 0]
    for column in [
        "reward_mean",
        "reward_std",
        "reward_max",
        "approx_kl",
        "clipfrac",
        "diversity",
        "first_step_ratio_max_dev",
        "loss",
        "grad_norm",
    ]:
        assert column in df and train[column].notna().all(), column
    assert (train["first_step_ratio_max_dev"] < 1e-5).all()  # exploration is replayed exactly
    assert df["eval_reward_mean"].notna().iloc[0] and df["eval_reward_mean"].notna().iloc[-1]
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").exists()
    assert list((tmp_path / "r" / "eval_images").glob("*.png"))
    # the last epoch's metrics reach callbacks (the harness's, optuna-integration's) as Lightning's own
    last, seen = train.iloc[-1], module.trainer.callback_metrics
    for column in ("reward_mean", "eval_reward_mean", "loss", "reward_queries"):
        assert float(seen[column]) == pytest.approx(last[column]), column


@pytest.mark.slow
def test_training_changes_only_lora_and_checkpoint_holds_only_it(tmp_path):
    module = run(config(tmp_path, **{"run.num_epochs": 1, "run.eval_every": 5}))
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"] and all("lora" in k for k in ckpt["state_dict"])
    assert ckpt["diffexp"]["reward_queries"] == 4
    assert any(p.abs().sum() > 0 for n, p in module.unet.named_parameters() if "lora_B" in n)


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    """Stop after 2 epochs and resume to 3: same reward_queries and, deterministic, the same curve."""
    det = {"run.deterministic": True, "exploration.strategy": "diffexp", "run.eval_every": 10}
    run(config(tmp_path, "full", **det, **{"run.num_epochs": 3}))
    run(config(tmp_path, "cut", **det, **{"run.num_epochs": 2}))
    module = run(config(tmp_path, "cut", **det, **{"run.num_epochs": 3}))  # resumes from last.ckpt
    assert module.reward_queries == 12
    full, cut = metrics(tmp_path, "full"), metrics(tmp_path, "cut")
    assert list(cut["reward_queries"]) == [0, 4, 8, 12]
    for column in ["reward_mean", "loss", "approx_kl", "grad_norm"]:
        pd.testing.assert_series_equal(full[column], cut[column], check_exact=False, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """2 gloo processes: queries counted on both ranks, replicas stay identical."""
    cfg = {
        "algorithm": "ddpo",
        "model": {"pretrained": "tiny-sd15"},
        "sample": {"num_steps": 3, "batch_size": 2, "num_batches_per_epoch": 1},
        "prompts": {"set": "list", "prompts": ["a cat", "a dog"], "eval_options": {}},
        "reward": {"name": "brightness"},
        "train": {
            "batch_size": 1,
            "gradient_accumulation_steps": 2,
            "stat_tracking": {"min_count": 2, "buffer_size": 4},
        },
        "run": {
            "num_epochs": 2,
            "eval_every": 5,
            "output_dir": str(tmp_path),
            "name": "ddp",
            "devices": 2,
            "accelerator": "cpu",
            "threads": 1,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [sys.executable, "-m", "diffexp", "train", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    df = metrics(tmp_path, "ddp")
    assert list(df["reward_queries"]) == [0, 4, 8]  # 2 ranks x 2 samples per epoch
    assert (df.loc[df["epoch"] >= 0, "ddp_param_divergence"] == 0).all()


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"sample.eta": 0.0}, "eta"),
        ({"train.batch_size": 3}, "multiple of train.batch_size"),
        ({"train.gradient_accumulation_steps": 3}, "optimiser step ends each inner epoch"),
        ({"train.clip_range": -1}, "train.clip_range"),
        ({"exploration.strategy": "greedy"}, "exploration.strategy"),
        ({"sample.num_stepz": 3}, "sample.num_stepz"),
        ({"algorithm": "ppo"}, "algorithm"),
        ({"sample.samples_per_prompt": 3}, "multiple of samples_per_prompt"),
        ({"train.timestep_window": [0.6, 0.4]}, "timestep_window"),
        ({"train.timestep_window": [0.0, 1.5]}, "timestep_window"),
    ],
)
def test_bad_config_names_the_field(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_config(None, {**BASE, **overrides})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path)


def test_samples_per_prompt_draws_groups_of_one_prompt(tmp_path):
    from diffexp.algorithms.runner import build_module

    prompts = [f"a shape number {i}" for i in range(6)]
    module = build_module(config(tmp_path, **{"prompts.prompts": prompts, "sample.samples_per_prompt": 2}))
    module.streams.seed(0)
    draws = [module.draw_prompts(4) for _ in range(30)]
    assert all(d[0] == d[1] and d[2] == d[3] for d in draws)  # consecutive pairs share a prompt
    assert {str(d[0]) for d in draws} | {str(d[2]) for d in draws} == {str(p) for p in module.train_prompts}
    assert any(d[0] != d[2] for d in draws)  # groups are drawn independently


def test_batch_arithmetic():
    c = load_config(
        None,
        {
            **NAMED,
            "sample.batch_size": 8,
            "sample.num_batches_per_epoch": 4,
            "train.batch_size": 4,
            "train.gradient_accumulation_steps": 2,
            "train.num_inner_epochs": 2,
            "run.devices": 2,
            "sample.num_steps": 20,
            "train.timestep_fraction": 0.5,
        },
    )
    assert c.batch_arithmetic() == {
        "samples_per_epoch": 64,
        "minibatches_per_inner_epoch": 8,
        "optimizer_steps_per_epoch": 8,
        "train_timesteps_per_sample": 10,
    }
    early = load_config(
        None, {**NAMED, "sample.num_steps": 20, "train.timestep_window": [0.0, 0.5], "train.timestep_fraction": 1.0}
    )
    assert (
        list(early.train.window_steps(20)) == list(range(10))
        and early.batch_arithmetic()["train_timesteps_per_sample"] == 10
    )
    middle = load_config(
        None, {**NAMED, "sample.num_steps": 10, "train.timestep_window": [0.25, 0.75], "train.timestep_fraction": 0.5}
    )
    assert (
        list(middle.train.window_steps(10)) == [2, 3, 4, 5, 6, 7]
        and middle.batch_arithmetic()["train_timesteps_per_sample"] == 3
    )


def test_batch_arithmetic_printout_names_the_window(capsys):
    from diffexp.algorithms.runner import print_batch_arithmetic

    print_batch_arithmetic(load_config(None, {**NAMED, "sample.num_steps": 20, "train.timestep_window": [0.0, 0.5]}))
    print_batch_arithmetic(load_config(None, {**NAMED, "sample.num_steps": 20}))
    early, whole = capsys.readouterr().out.splitlines()
    assert early.endswith("(drawn from steps 0-9 of 0-19)") and "drawn from" not in whole


@pytest.mark.parametrize(
    "window, allowed", [((0.0, 1.0), set(range(8))), ((0.0, 0.5), {0, 1, 2, 3}), ((0.5, 1.0), {4, 5, 6, 7})]
)
def test_update_trains_only_the_window_steps(tmp_path, window, allowed):
    """Each sample trains ``timestep_fraction`` of the window's steps, each at most once, none outside it."""
    from diffexp.algorithms.runner import build_module

    module = build_module(
        config(
            tmp_path, **{"sample.num_steps": 8, "train.timestep_window": list(window), "train.timestep_fraction": 0.5}
        )
    )
    module.sampler = module.make_sampler()  # what on_fit_start does, without a Trainer
    module.no_sync = contextlib.nullcontext
    module.train_generator.manual_seed(0)
    traj = module.generate()
    trained: list[torch.Tensor] = []
    replay = module.sampler.step_log_prob

    def recording(sub, step_idx):
        trained.append(step_idx.clone())
        return replay(sub, step_idx)

    module.sampler.step_log_prob = recording
    module.optimizers = lambda: torch.optim.SGD(module.trainable, lr=0.0)
    module.manual_backward = lambda loss: loss.backward()
    module.update(traj, torch.zeros(len(traj)), torch.zeros(len(traj)))
    per_sample = len(allowed) // 2  # timestep_fraction 0.5 of the window
    assert len(trained) == 2 * per_sample  # 2 minibatches of 2 samples, one call per trained step
    rows = torch.cat([torch.stack(trained[m * per_sample : (m + 1) * per_sample], 1) for m in (0, 1)])  # (sample, step)
    assert set(rows.flatten().tolist()) <= allowed
    assert all(len(set(row.tolist())) == per_sample for row in rows)  # no step twice for a sample


@pytest.mark.parametrize("strategy", ["baseline", "cfg", "phrase", "diffexp", "sde_window", "guidance_interval"])
def test_first_step_ratio_is_one_with_replay_and_bites_without(sd15, strategy):
    """Replaying the recorded exploration gives ratio 1 at the first inner step; replaying the
    *unexplored* policy (plain prompt, base CFG) instead puts the ratio outside DDPO's clip
    range wherever exploration changed the policy: the pitfall the replay guards against."""
    from dataclasses import replace

    from diffexp.exploration import build_strategy
    from diffexp.prompts.base import Prompt
    from diffexp.sampling.trajectory import TrajectorySampler

    steps, clip = 6, 1e-4
    sampler = TrajectorySampler(sd15, num_steps=steps, eta=1.0)
    g = torch.Generator().manual_seed(0)
    prompts = [Prompt("a monkey washing the dishes", ("monkey", "washing the dishes"))] * 8
    # phrase weights of 1.5: draws near w = 1 barely change the policy, which says nothing about the guard;
    # a noise window with eta 0.3 outside it: those steps have a density that the unexplored eta 1 misreads
    options = {"phrase": {"weight": 1.5}, "noise_window": {"window": [0.0, 0.5], "outside": 0.3}}
    plan = build_strategy({"strategy": strategy, **options}).plan(prompts, steps, g)
    with torch.no_grad():
        traj = sampler.sample(plan, g)
        naive = replace(
            traj,
            cond=sampler.encoder.encode(plan.prompts),
            guidance_scales=torch.full_like(traj.guidance_scales, 5.0),
            noise_levels=torch.ones_like(traj.noise_levels),
        )
        replayed = torch.stack([sampler.step_log_prob(traj, k) for k in range(steps)], 1)
        unexplored = torch.stack([sampler.step_log_prob(naive, k) for k in range(steps)], 1)
    assert (torch.exp(replayed - traj.log_probs) - 1).abs().max().item() <= 1e-5
    weighted = torch.tensor([bool(w) for w in plan.phrase_weights]).unsqueeze(1)
    changed = (traj.guidance_scales != 5.0) | weighted | (traj.noise_levels != 1.0)
    deviation = (torch.exp(unexplored - traj.log_probs) - 1).abs()
    clipped = deviation > clip
    if strategy == "baseline":
        assert not changed.any() and not clipped.any()
        return
    fraction, median = clipped[changed].float().mean().item(), deviation[changed].median().item()
    print(f"{strategy}: without replay {fraction:.0%} of explored steps clip, median |r - 1| = {median:.1e}")
    # Measured on this random twin: cfg 100% (median 3e-2); phrase ~70% and diffexp ~65% (median ~2e-4),
    # since a random 32-wide text encoder barely separates weighted from plain prompts.
    assert median > clip
    assert fraction >= (0.9 if strategy in ("cfg", "sde_window", "guidance_interval") else 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_kill_9_and_resume_counts_every_query_once(tmp_path, algorithm):
    """SIGKILL a `diffexp train` process after its second checkpoint, rerun the same command:
    reward_queries continues from the checkpoint with no lost or double-counted queries."""
    import os
    import signal
    import time

    cfg = {
        "algorithm": algorithm,
        "model": {"pretrained": "tiny-sd15"},
        "sample": {"num_steps": 12, "batch_size": 2, "num_batches_per_epoch": 2},  # slow enough to be killed mid-run
        "prompts": {"set": "list", "prompts": ["a cat", "a dog"], "eval_options": {}},
        "reward": {"name": "brightness"},
        "run": {"num_epochs": 20, "eval_every": 100, "output_dir": str(tmp_path), "name": "k", "threads": 1},
    }
    if algorithm == "ddpo":
        cfg["train"] = {
            "batch_size": 2,
            "gradient_accumulation_steps": 1,
            "stat_tracking": {"min_count": 2, "buffer_size": 4},
        }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    command = [sys.executable, "-m", "diffexp", "train", "--config", str(path)]
    ckpt = tmp_path / "k" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["diffexp"]["reward_queries"] >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["diffexp"]["reward_queries"]
    assert 8 <= killed_at < 80
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    final = torch.load(ckpt, weights_only=True)["diffexp"]["reward_queries"]
    assert final == 80  # 20 epochs x 4 samples, whatever the kill point
    queries = metrics(tmp_path, "k")["reward_queries"].tolist()
    assert queries == list(
        range(0, 81, 4)
    )  # the base model, then each epoch once: rows past the checkpoint were dropped


@pytest.mark.parametrize("allow", [False, True])
def test_tf32_follows_the_config(tmp_path, allow):
    """TF32 is off by default (the replayed PPO ratio stays within 1e-5 of 1 on GPUs)."""
    torch.backends.cudnn.allow_tf32 = not allow
    run(config(tmp_path, **{"run.num_epochs": 1, "run.eval_every": 5, "run.allow_tf32": allow}))
    assert torch.backends.cudnn.allow_tf32 is allow and torch.backends.cuda.matmul.allow_tf32 is allow
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, for the tests after this one
    torch.backends.cuda.matmul.allow_tf32 = False


def test_epsilon_step_weighting_passes_each_steps_inverse_gain_to_the_loss(tmp_path, monkeypatch):
    """train.step_weighting=epsilon: every PPO term is weighted by 1 / (the schedule's gain of its step),
    normalised to mean 1 over the window; 'none' passes no weights."""
    from diffexp.algorithms import ddpo
    from diffexp.algorithms.runner import build_module
    from diffexp.sampling.ddim import epsilon_logprob_scale

    module = build_module(
        config(
            tmp_path, **{"sample.num_steps": 8, "train.timestep_window": [0.5, 1.0], "train.step_weighting": "epsilon"}
        )
    )
    module.sampler = module.make_sampler()
    module.no_sync = contextlib.nullcontext
    module.optimizers = lambda: torch.optim.SGD(module.trainable, lr=0.0)
    module.manual_backward = lambda loss: loss.backward()
    traj = module.generate()
    gain = epsilon_logprob_scale(module.sampler.scheduler, traj.timesteps.cpu(), 1.0)
    expected = (1 / gain) / (1 / gain[4:]).mean()
    seen = []
    replay, loss_fn = module.sampler.step_log_prob, ddpo.ppo_clip_loss

    def recording_replay(sub, step_idx):
        seen.append([step_idx.clone()])
        return replay(sub, step_idx)

    def recording_loss(*args):
        seen[-1].append(args[5])
        return loss_fn(*args)

    module.sampler.step_log_prob = recording_replay
    monkeypatch.setattr(ddpo, "ppo_clip_loss", recording_loss)
    module.update(traj, torch.zeros(len(traj)), torch.randn(len(traj)))
    assert seen and all(torch.allclose(w, expected[s]) for s, w in seen)
    assert expected[4:].mean().item() == pytest.approx(1.0) and expected.max() / expected.min() > 3  # the gains differ

    module.config.train.step_weighting = "none"
    seen.clear()
    module.update(traj, torch.zeros(len(traj)), torch.randn(len(traj)))
    assert seen and all(w is None for _, w in seen)
