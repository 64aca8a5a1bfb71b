"""Every experiments/paper/ and experiments/flow/ study runs one tiny epoch with tiny twins in place
of the real weights.

SD 1.5 / SDXL / SD3.5 / FLUX.1 become their tiny random twins; the aesthetic, PickScore and HPSv2
rewards load tiny random open_clip / CLIP twins from local files through their real loading code.
Everything else (prompt sets, exploration, algorithm settings, LoRA targets) is the study's own.
"""

from pathlib import Path

import open_clip
import pytest
import torch
from open_clip import factory
from transformers import CLIPConfig, CLIPModel

from diffexp.algorithms.runner import run
from diffexp.harness.study import load_study
from tests.helpers import tiny_open_clip_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "experiments" / "paper").glob("*.yaml"))
FLOW = sorted((ROOT / "experiments" / "flow").glob("*.yaml"))
TWINS = {"stable-diffusion-3": "tiny-sd3", "flux": "tiny-flux", "xl": "tiny-sdxl"}
TINY_CLIP = "diffexp-tiny-paper"


@pytest.fixture(scope="module")
def reward_twins(tmp_path_factory):
    factory._MODEL_CONFIGS[TINY_CLIP] = tiny_open_clip_config(quick_gelu=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("twins")
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), folder / "open_clip_pytorch_model.bin")
    from diffexp.rewards.aesthetic import AestheticMLP

    torch.save(AestheticMLP(16).state_dict(), folder / "sac+logos+ava1-l14-linearMSE.pth")
    torch.save({"state_dict": open_clip.create_model(TINY_CLIP).state_dict()}, folder / "HPS_v2_compressed.pt")
    CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=77,
            ),
            vision_config=dict(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
            ),
            projection_dim=16,
        )
    ).save_pretrained(folder / "pickscore")
    yield {
        "aesthetic": {"head_weights": str(folder), "clip_weights": str(folder), "clip_model": TINY_CLIP},
        "pickscore": {"model": str(folder / "pickscore")},
        "hps": {"weights": str(folder / "HPS_v2_compressed.pt"), "clip_model": TINY_CLIP},
    }
    factory._MODEL_CONFIGS.pop(TINY_CLIP, None)


def tiny_overrides(config, reward_twins) -> dict:
    name = config.model.pretrained.lower()
    overrides = {
        "model.pretrained": next((twin for key, twin in TWINS.items() if key in name), "tiny-sd15"),
        "model.dtype": "fp32",
        "sample.num_steps": 2,
        "sample.resolution": None,
        "sample.samples_per_prompt": 1,
        "sample.batch_size": 2,
        "sample.num_batches_per_epoch": 1,
        "reward.options": reward_twins[config.reward.name],
        "run.num_epochs": 1,
        "run.eval_every": 1,
        "run.eval_num_prompts": 1,
        "run.eval_samples_per_prompt": 1,
        "run.precision": "32-true",
        "run.accelerator": "cpu",
        "run.loggers": ["csv"],
        "run.threads": 1,
    }
    if config.algorithm == "grpo":
        overrides.update({"train.batch_size": 2, "train.gradient_accumulation_steps": 1})
    elif config.algorithm == "ddpo":
        overrides.update(
            {
                "train.batch_size": 2,
                "train.gradient_accumulation_steps": 1,
                "train.stat_tracking.min_count": 1,
                "train.stat_tracking.buffer_size": 2,
            }
        )
    else:
        overrides["train.gradient_accumulation_steps"] = 1
    return overrides


def test_every_paper_experiment_has_a_study():
    names = {p.stem for p in PAPER}
    assert {
        "ddpo_aesthetic",
        "ddpo_pickscore",
        "alignprop_aesthetic",
        "alignprop_pickscore",
        "ddpo_drawbench",
        "ddpo_sdxl",
    } <= names


def test_the_field_has_its_studies():
    assert {p.stem for p in FLOW} >= {
        "grpo_sd35m_pickscore",
        "grpo_sd35m_knobs",
        "grpo_flux_hpsv2",
        "grpo_sd15_hpsv2",
        "alignprop_sd35m_pickscore",
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER + FLOW, ids=[f"{p.parent.name}/{p.stem}" for p in PAPER + FLOW])
def test_paper_study_runs_one_tiny_epoch(path, reward_twins, tmp_path):
    study = load_study(path)
    cells = study.cells()
    arms = {c.params["exploration.strategy"] for c in cells}
    knobs = path.stem.endswith("knobs")
    assert arms == (
        {"baseline", "sde_window", "guidance_interval", "diffexp"}
        if knobs
        else {"baseline", "cfg", "phrase", "diffexp"}
    )
    cell = next(c for c in cells if c.params["exploration.strategy"] == "diffexp" and c.params["run.seed"] == 0)
    real = study.build_config(cell)
    assert real.model.pretrained.count("/") == 1  # a hub id (or a local path via override)
    config = study.build_config(
        cell, {"run.output_dir": str(tmp_path), "run.name": "t", **tiny_overrides(real, reward_twins)}
    )
    module = run(config)
    assert module.reward_queries == 2
    assert (tmp_path / "t" / "checkpoints" / "last.ckpt").exists()
