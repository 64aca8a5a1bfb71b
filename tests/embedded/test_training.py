"""The embedded world's generator training, on tiny budgets: every generator stage runs, resumes
(a finished stage is skipped) and saves a pipeline plain diffusers loads; and a work dir seeded
from the shipped model continues from the shipped weights."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from diffexp.embedded.pipeline import PIPELINE_DIR
from diffexp.embedded.settings import TrainSettings
from diffexp.embedded.training import seed_from_shipped, train

GENERATOR_STAGES = ["vae", "latents", "generator", "generator_finetune", "generator_refine", "generator_context"]


def tiny_settings(work_dir) -> TrainSettings:
    return TrainSettings(
        work_dir=str(work_dir),
        vae_steps=2,
        vae_batch=4,
        dataset_size=32,
        gen_steps=2,
        gen_batch=4,
        finetune_steps=2,
        refine_steps=3,
        context_steps=2,
        checkpoint_every=1,
        threads=1,
    )


@pytest.mark.slow
def test_generator_stages_run_resume_and_save_a_pipeline(tmp_path):
    settings = tiny_settings(tmp_path)
    train(settings, only=GENERATOR_STAGES)
    refine = tmp_path / "generator_refine"
    assert json.loads((refine / "DONE").read_text())["steps"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(refine / "pipeline")
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    saved = load_file(str(refine / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float16}  # shipped in fp16
    # a second call finds every stage done and changes nothing
    before = (refine / "weights.safetensors").stat().st_mtime_ns
    train(settings, only=GENERATOR_STAGES)
    assert (refine / "weights.safetensors").stat().st_mtime_ns == before
    # the fourth phase pads prompts to the short context, and its pipeline says so to diffusers
    context = tmp_path / "generator_context"
    assert json.loads((context / "DONE").read_text())["context_length"] == settings.context_length == 12
    short = StableDiffusionPipeline.from_pretrained(context / "pipeline")
    assert short.tokenizer.model_max_length == 12 and pipe.tokenizer.model_max_length == 77
    assert short.encode_prompt("a red circle above a blue square", "cpu", 1, False)[0].shape[1] == 12


@pytest.mark.slow
@pytest.mark.skipif(not (PIPELINE_DIR / "model_index.json").exists(), reason="embedded weights not shipped")
def test_refine_continues_from_the_shipped_model(tmp_path):
    settings = tiny_settings(tmp_path)
    seed_from_shipped(settings, PIPELINE_DIR)
    seeded = load_file(str(tmp_path / "generator_finetune" / "weights.safetensors"))
    shipped = load_file(str(PIPELINE_DIR / "unet" / "diffusion_pytorch_model.safetensors"))
    name = next(iter(shipped))
    torch.testing.assert_close(seeded[f"unet.{name}"], shipped[name].float())
    assert not (tmp_path / "generator" / "DONE").exists()  # not retrained
    train(settings, only=["latents", "generator_refine"])
    refined = load_file(str(tmp_path / "generator_refine" / "weights.safetensors"))
    assert refined[f"unet.{name}"].shape == seeded[f"unet.{name}"].shape
    assert not torch.equal(refined[f"unet.{name}"], seeded[f"unet.{name}"])  # it trained from there
