"""Pipeline loading (folder / hub id), LoRA adapters in the diffusers format."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffexp.models import get_pipeline
from diffexp.models.lora import LoraSettings, add_lora, load_lora, save_lora
from diffexp.models.pipelines import ModelNotFoundError, load_pipeline, parse_dtype
from diffexp.models.twins import tiny_sd15_pipeline, tiny_sdxl_pipeline


@pytest.mark.parametrize("make", [tiny_sd15_pipeline, tiny_sdxl_pipeline])
def test_load_from_saved_folder(tmp_path, make):
    pipe = make(seed=4)
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path, dtype="fp32")
    assert type(loaded) is type(pipe)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    for a, b in zip(pipe.unet.parameters(), loaded.unet.parameters()):
        assert torch.equal(a, b)
    half = load_pipeline(tmp_path, dtype="bf16")
    assert half.unet.dtype == torch.bfloat16


def test_missing_hub_model_gives_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline("no-such-org/no-such-model")
    message = str(info.value)
    assert "no-such-org/no-such-model" in message and "download" in message and "local" in message


def test_missing_folder_and_bad_inputs(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nope" / "model")
    with pytest.raises(ModelNotFoundError, match="could not load"):
        load_pipeline(tmp_path)  # exists, but holds no pipeline
    with pytest.raises(ValueError, match="precision"):
        parse_dtype("fp8")


def test_builtin_names():
    assert isinstance(get_pipeline("tiny-sd15"), StableDiffusionPipeline)
    assert get_pipeline("tiny-sdxl", dtype="bf16").unet.dtype == torch.bfloat16


def test_lora_trains_only_adapters_and_round_trips(tmp_path):
    pipe = tiny_sd15_pipeline(seed=2)
    params = add_lora(pipe.unet, LoraSettings(rank=2, alpha=4))
    trainable = [n for n, p in pipe.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for p in params) == sum(p.numel() for p in pipe.unet.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in params:
            p.add_(0.1)
    x, emb = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = pipe.unet(x, 10, emb).sample
    save_lora(pipe, tmp_path)
    assert (tmp_path / "pytorch_lora_weights.safetensors").exists()

    fresh = tiny_sd15_pipeline(seed=2)
    with torch.no_grad():
        before = fresh.unet(x, 10, emb).sample
    fresh.load_lora_weights(str(tmp_path))  # plain diffusers API reads our file
    with torch.no_grad():
        after = fresh.unet(x, 10, emb).sample
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(before, expected, atol=1e-3)

    other = tiny_sd15_pipeline(seed=2)
    load_lora(other, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(other.unet(x, 10, emb).sample, expected, atol=1e-5, rtol=0)


def test_lora_bad_target_modules_named():
    with pytest.raises(ValueError, match="target_modules"):
        add_lora(tiny_sd15_pipeline().unet, LoraSettings(target_modules=["no_such_layer"]))
