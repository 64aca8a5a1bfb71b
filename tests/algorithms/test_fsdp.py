"""FSDP2 (``run.strategy: fsdp``) on two CPU processes: the same training as DDP, an exact resume,
and checkpoints that hold the whole LoRA adapter (on the FLUX twin: transformer blocks and T5)."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

COLUMNS = ["reward_mean", "loss", "approx_kl", "grad_norm", "eval_reward_mean"]


def train(tmp_path, name: str, strategy: str, epochs: int, **sections) -> pd.DataFrame:
    config = {
        "algorithm": "ddpo",
        "model": {"pretrained": "tiny-sd15"},
        "sample": {"num_steps": 3, "batch_size": 4, "num_batches_per_epoch": 1},
        "exploration": {"strategy": "diffexp"},
        "prompts": {"set": "list", "prompts": ["a cat", "a (red)1.2 dog"], "eval_options": {}},
        "reward": {"name": "brightness"},
        "train": {"batch_size": 2, "gradient_accumulation_steps": 1, "stat_tracking": {"min_count": 2}},
        "run": {
            "num_epochs": epochs,
            "eval_every": 2,
            "eval_num_prompts": 1,
            "output_dir": str(tmp_path),
            "name": name,
            "devices": 2,
            "strategy": strategy,
            "accelerator": "cpu",
            "threads": 1,
            "deterministic": True,
        },
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values} if isinstance(values, dict) else values
    if config["algorithm"] == "grpo":
        config["train"].pop("stat_tracking")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "diffexp", "train", "--config", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(tmp_path / name / "csv" / "metrics.csv")


FLUX = {
    "algorithm": "grpo",
    "model": {"pretrained": "tiny-flux"},
    "sample": {"num_steps": 3, "eta": 0.7, "batch_size": 4, "num_batches_per_epoch": 1, "samples_per_prompt": 2},
    "exploration": {"strategy": "diffexp", "guidance_scale": 3.5},
    "train": {"batch_size": 2, "gradient_accumulation_steps": 1, "beta": 0.01},
}


@pytest.mark.slow
def test_fsdp_trains_as_ddp_does_and_resumes_exactly(tmp_path):
    """GRPO on the FLUX twin: its double/single-stream blocks, its T5 encoder's blocks and the LoRA in
    them are sharded; the training is DDP's, a resume continues it exactly, the checkpoint is whole."""
    ddp = train(tmp_path, "ddp", "ddp", 2, **FLUX)
    fsdp = train(tmp_path, "fsdp", "fsdp", 2, **FLUX)
    assert list(fsdp["reward_queries"]) == [0, 8, 16]
    for column in [*COLUMNS, "kl"]:  # the same maths; reduce-scatter and all-reduce round differently
        pd.testing.assert_series_equal(fsdp[column], ddp[column], check_exact=False, rtol=1e-4, atol=1e-5)
    train(tmp_path, "cut", "fsdp", 1, **FLUX)
    resumed = train(tmp_path, "cut", "fsdp", 2, **FLUX)  # every process resumes its own random streams
    for column in ["reward_mean", "loss", "approx_kl", "grad_norm", "kl"]:  # (the 1-epoch run evaluated its end)
        pd.testing.assert_series_equal(resumed[column], fsdp[column], check_exact=False, rtol=1e-6, atol=1e-9)
    assert resumed["eval_reward_mean"].iloc[-1] == pytest.approx(fsdp["eval_reward_mean"].iloc[-1], rel=1e-6)
    saved = {
        name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for name in ("ddp", "fsdp")
    }
    assert saved["fsdp"].keys() == saved["ddp"].keys() and all("lora" in k for k in saved["fsdp"])
    for key, value in saved["fsdp"].items():  # whole tensors, not one process's shard
        assert value.shape == saved["ddp"][key].shape
        torch.testing.assert_close(value, saved["ddp"][key], rtol=1e-4, atol=1e-6)


def test_the_sharded_units_are_each_models_blocks():
    from diffexp.algorithms.sharding import _blocks
    from diffexp.models.twins import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd15_pipeline

    flux, sd3, sd15 = tiny_flux_pipeline(), tiny_sd3_pipeline(t5=True), tiny_sd15_pipeline()
    assert len(_blocks(flux.transformer)) == 2  # one double-stream, one single-stream block
    assert len(_blocks(flux.text_encoder_2)) == len(_blocks(sd3.text_encoder_3)) == 2  # T5 blocks
    assert len(_blocks(sd3.transformer)) == 2
    assert len(_blocks(sd15.unet)) == 5  # two down, two up, one mid block
