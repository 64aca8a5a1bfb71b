"""Faults during training: SIGKILL at each phase, a half-written checkpoint, non-finite numbers."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from diffexp.algorithms.config import load_config
from diffexp.algorithms.runner import run
from diffexp.algorithms.stopping import NonFiniteError
from diffexp.rewards.base import Reward

EPOCHS, PER_EPOCH = 4, 4


def write_config(tmp_path, name: str) -> str:
    cfg = {
        "model": {"pretrained": "tiny-sd15"},
        "sample": {"num_steps": 3, "batch_size": PER_EPOCH, "num_batches_per_epoch": 1},
        "exploration": {"strategy": "diffexp"},
        "prompts": {"set": "list", "prompts": ["a cat", "a (red)1.2 dog"], "eval_options": {}},
        "reward": {"name": "brightness"},
        "train": {
            "batch_size": 2,
            "gradient_accumulation_steps": 1,
            "stat_tracking": {"min_count": 2, "buffer_size": 4},
        },
        "run": {
            "num_epochs": EPOCHS,
            "eval_every": 100,
            "output_dir": str(tmp_path),
            "name": name,
            "threads": 1,
            "deterministic": True,
            "loggers": ["csv"],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def queries_in(ckpt) -> int:
    return torch.load(ckpt, weights_only=True)["diffexp"]["reward_queries"]


@pytest.mark.slow
def test_sigkill_at_each_phase_then_resume_gives_the_uninterrupted_curve(tmp_path):
    train = [sys.executable, "-m", "diffexp", "train", "--config"]
    subprocess.run([*train, write_config(tmp_path, "ref")], check=True, capture_output=True, timeout=600)
    reference = pd.read_csv(tmp_path / "ref" / "csv" / "metrics.csv")
    for phase in ["sampling", "reward", "update", "checkpoint"]:
        config = write_config(tmp_path, phase)
        killed = subprocess.run(
            [sys.executable, "-m", "tests.algorithms.fault_injection", config, phase, "2"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert killed.returncode == -9, (phase, killed.stderr[-2000:])
        ckpt = tmp_path / phase / "checkpoints" / "last.ckpt"
        assert queries_in(ckpt) == 2 * PER_EPOCH, phase  # the last good checkpoint: end of epoch 2 of 4
        if phase == "checkpoint":  # the half-written file never replaced it
            assert (tmp_path / phase / "checkpoints" / "last.ckpt.tmp").exists()
        resumed = subprocess.run([*train, config], capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, (phase, resumed.stderr[-2000:])
        assert "resuming from" in resumed.stdout
        assert queries_in(ckpt) == EPOCHS * PER_EPOCH
        curve = pd.read_csv(tmp_path / phase / "csv" / "metrics.csv")
        assert curve["reward_queries"].tolist() == [PER_EPOCH * i for i in range(EPOCHS + 1)], (
            phase
        )  # 0: the base model
        for column in ["reward_mean", "loss", "approx_kl"]:
            pd.testing.assert_series_equal(
                reference[column], curve[column], check_exact=False, rtol=1e-6, atol=1e-9, obj=f"{phase}: {column}"
            )


class NaNOnSecondCall(Reward):
    """Brightness, except every score of the second call is NaN."""

    name = "nan_at_second_call"
    differentiable = True

    def __init__(self):
        super().__init__()
        self.calls = 0

    def score(self, images, prompts):
        self.calls += 1
        scores = images.mean(dim=(1, 2, 3))
        return scores * float("nan") if self.calls == 2 else scores


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_non_finite_reward_stops_the_run_naming_step_and_reward(tmp_path, monkeypatch, algorithm):
    import mlflow

    import diffexp.algorithms.base as base

    monkeypatch.setattr(base, "resolve_reward", lambda config: NaNOnSecondCall())
    overrides = {
        "algorithm": algorithm,
        "model.pretrained": "tiny-sd15",
        "sample.num_steps": 2,
        "sample.batch_size": 2,
        "sample.num_batches_per_epoch": 1,
        "prompts.set": "list",
        "prompts.prompts": ["a cat"],
        "prompts.eval_options": {},
        "reward.name": "brightness",
        "run.num_epochs": 3,
        "run.eval_every": 100,
        "run.loggers": ["csv", "mlflow"],
        "run.output_dir": str(tmp_path),
        "run.name": "nan",
        "run.threads": 1,
        "run.mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "run.eval_at_start": False,  # the stub counts calls: the first two must be training epochs
    }
    if algorithm == "ddpo":
        overrides.update(
            {"train.batch_size": 2, "train.gradient_accumulation_steps": 1, "train.stat_tracking.min_count": 1}
        )
    with pytest.raises(NonFiniteError, match=r"epoch 1, .*reward 'brightness'.*non-finite"):
        run(load_config(None, overrides))
    assert queries_in(tmp_path / "nan" / "checkpoints" / "last.ckpt") == 2  # epoch 1's checkpoint survives
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["status"].iloc[0] == "FAILED"


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("content", ["payload", "truncated", "foreign"])
def test_resume_refuses_unsafe_or_broken_checkpoints(tmp_path, content):
    from diffexp.algorithms.checkpointing import CheckpointError

    config = load_config(write_config(tmp_path, "r"), {"run.num_epochs": 1})
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    marker = tmp_path / "pwned.txt"
    if content == "payload":
        torch.save({"diffexp": {"reward_queries": 0}, "evil": _Payload(marker)}, ckpt)
    elif content == "truncated":
        torch.save({"diffexp": {"reward_queries": 0}, "w": torch.zeros(1000)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    else:
        torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(CheckpointError, match=f"cannot resume from {ckpt}"):
        run(config)
    assert not marker.exists()


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch):
    import diffexp.algorithms.ddpo as ddpo

    original, calls = ddpo.ppo_clip_loss, []

    def loss_goes_nan(*args, **kwargs):
        loss, info = original(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), info) if len(calls) > 6 else (loss, info)  # after epoch 1's 6 losses

    monkeypatch.setattr(ddpo, "ppo_clip_loss", loss_goes_nan)
    config = load_config(write_config(tmp_path, "nanloss"), {"run.num_epochs": 3})
    with pytest.raises(
        NonFiniteError,
        match=r"epoch 1, update \(inner epoch 0, minibatch 0, timestep 0\): loss is nan \(reward 'brightness'\)",
    ):
        run(config)
    assert queries_in(tmp_path / "nanloss" / "checkpoints" / "last.ckpt") == PER_EPOCH


def test_a_torn_checkpoint_is_set_aside_for_the_retry(tmp_path):
    from diffexp.algorithms.checkpointing import checkpoint_usable_or_set_aside

    torn = tmp_path / "last.ckpt"
    torn.write_bytes(b"PK\x03\x04 half a zip")
    assert not checkpoint_usable_or_set_aside(torn)
    assert not torn.exists() and [p.name.startswith("last.ckpt.broken-") for p in tmp_path.iterdir()] == [True]
