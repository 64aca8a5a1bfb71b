"""`diffexp export`: a trained embedded run, reloaded through plain diffusers, draws the trained
module's own images."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffexp.algorithms.config import load_config
from diffexp.algorithms.export import ExportError, export_run
from diffexp.algorithms.runner import run
from diffexp.cli import main
from diffexp.embedded.pipeline import PIPELINE_DIR
from diffexp.exploration import build_strategy
from diffexp.sampling.trajectory import TrajectorySampler

PROMPTS = ["a red circle above a blue square", "a green star"]


def draw(pipe) -> torch.Tensor:
    sampler = TrajectorySampler(pipe, num_steps=4, eta=1.0)
    generator = torch.Generator().manual_seed(7)
    plan = build_strategy({"strategy": "baseline", "guidance_scale": 5.0}).plan(PROMPTS, 4, generator)
    with torch.no_grad():
        return sampler.sample(plan, generator).images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    config = load_config(
        "diffexp/embedded/configs/ddpo.yaml",
        {
            "sample.num_steps": 4,
            "sample.batch_size": 8,
            "sample.num_batches_per_epoch": 1,
            "train.learning_rate": 0.05,  # large, so the adapter visibly changes the images
            "run.num_epochs": 1,
            "run.eval_at_start": False,
            "run.eval_every": 100,
            "run.eval_num_prompts": 1,
            "run.loggers": ["csv"],
            "run.output_dir": str(folder),
            "run.name": "r",
            "run.threads": 2,
        },
    )
    module = run(config)
    module.unet.eval()
    return folder / "r", draw(module.pipe)


@pytest.mark.slow
def test_exported_lora_and_merged_pipeline_draw_the_trained_images(trained, tmp_path):
    run_dir, own = trained
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out"), "--merge"]) == 0
    manifest = json.loads((tmp_path / "out" / "diffexp_export.json").read_text())
    assert manifest["base_model"] == "embedded" and manifest["lora"]["rank"] == 4 and manifest["reward_queries"] == 8

    plain = StableDiffusionPipeline.from_pretrained(PIPELINE_DIR, torch_dtype=torch.float32, safety_checker=None)
    base = draw(plain)
    plain.load_lora_weights(str(tmp_path / "out"))
    assert (own - base).abs().max() > 1e-2  # the adapter matters, so the comparison below means something
    assert (draw(plain) - own).abs().max() <= 1e-5
    merged = StableDiffusionPipeline.from_pretrained(tmp_path / "out" / "pipeline", torch_dtype=torch.float32)
    assert (draw(merged) - own).abs().max() <= 1e-5


def test_export_refuses_what_would_load_nothing(trained, tmp_path, monkeypatch):
    run_dir, _ = trained
    with pytest.raises(ExportError, match="no config.yaml"):
        export_run(tmp_path, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_run(run_dir, tmp_path / "file")
    import diffexp.algorithms.export as export

    real = export.save_lora

    def renamed_keys(pipe, directory):  # a file diffusers reads without error but loads nothing from
        real(pipe, directory)
        from safetensors.torch import load_file, save_file

        path = directory / export.LORA_FILE
        save_file({k.replace("unet.", "nothing."): v for k, v in load_file(path).items()}, path)

    monkeypatch.setattr(export, "save_lora", renamed_keys)
    with pytest.raises(ExportError, match="loads no adapter|does not match"):
        export_run(run_dir, tmp_path / "broken")


def test_the_readmes_plain_diffusers_recipe_runs_as_written_on_cpu(trained, tmp_path, monkeypatch):
    """The README's python block, with BASE the embedded world's folder (fp16 weights: on CPU it
    needs the float32 it asks for) and the export in ./exported."""
    import re
    from pathlib import Path

    run_dir, own = trained
    assert main(["export", str(run_dir), "--out", str(tmp_path / "exported")]) == 0
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_lora_weights" in b)
    monkeypatch.chdir(tmp_path)
    scope = {"StableDiffusionPipeline": StableDiffusionPipeline, "torch": torch, "BASE": str(PIPELINE_DIR)}
    exec(block, scope)  # noqa: S102 - the project's own README
    assert (draw(scope["pipe"]) - own).abs().max() <= 1e-5
