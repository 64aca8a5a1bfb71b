"""PickScore on a tiny random transformers CLIPModel twin saved as a local folder."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from diffexp.models.tokenizer import clip_tokenizer
from diffexp.rewards import build_reward
from diffexp.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

PROMPTS = ["a cat washing the dishes", "a dog riding a bike", "a monkey playing chess"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    torch.manual_seed(0)
    config = CLIPConfig(
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
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(1.5)  # not the default, so a missing scale would show
    folder = tmp_path_factory.mktemp("pickscore")
    model.save_pretrained(folder)
    return folder, model


def expected(model, images, prompts, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    """logit_scale.exp() * cos(text, image), computed by hand from the raw towers."""
    pixels = TF.resize(images, [32, 32], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    pixels = TF.normalize(pixels, mean, std)
    image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    ids = clip_tokenizer()(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    text = model.text_projection(model.text_model(input_ids=ids.input_ids).pooler_output)
    cosine = (image * text).sum(-1) / (image.norm(dim=-1) * text.norm(dim=-1))
    return model.logit_scale.exp() * cosine


def test_scores_match_logit_scale_times_cosine(twin):
    folder, model = twin
    images = torch.rand(3, 3, 64, 64)
    scores = build_reward("pickscore", model=str(folder))(images, PROMPTS)
    with torch.no_grad():
        assert torch.allclose(scores, expected(model, images, PROMPTS), atol=1e-5)


def test_processor_folder_sets_tokenizer_and_normalisation(twin, tmp_path):
    folder, model = twin
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(mean), image_std=list(std)
    ).save_pretrained(tmp_path)
    clip_tokenizer().save_pretrained(tmp_path)
    images = torch.rand(2, 3, 32, 32)
    scores = build_reward("pickscore", model=str(folder), processor=str(tmp_path))(images, PROMPTS[:2])
    with torch.no_grad():
        assert torch.allclose(scores, expected(model, images, PROMPTS[:2], mean, std), atol=1e-5)


def test_gradients_and_batching(twin):
    folder, _ = twin
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    reward = build_reward("pickscore", model=str(folder), batch_size=2)
    scores = reward(images, PROMPTS)
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    whole = build_reward("pickscore", model=str(folder))(images.detach(), PROMPTS)
    assert torch.allclose(scores.detach(), whole, atol=1e-6)
