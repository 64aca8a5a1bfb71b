"""Held-out evaluation: the diversity metrics against closed forms, the file names, and, on the tiny
SD 1.5 twin, the base-model evaluation at 0 queries that every run of a study shares."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from diffexp.algorithms import heldout
from diffexp.algorithms.base import evenly_spaced
from diffexp.algorithms.config import load_config
from diffexp.algorithms.runner import run
from diffexp.evaluation import grid_name, parse_eval_image, samples_name, vendi_score, within_prompt_vendi
from diffexp.visualize import image_strip, split_strip


def test_vendi_score_closed_forms():
    same = torch.ones(4, 8)
    assert vendi_score(same) == pytest.approx(1.0)
    assert vendi_score(torch.eye(5)) == pytest.approx(5.0)
    # two unit vectors with cosine c: K / 2 has eigenvalues (1 +- c) / 2
    c = 0.6
    pair = torch.tensor([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    lam = [(1 + c) / 2, (1 - c) / 2]
    assert vendi_score(pair) == pytest.approx(math.exp(-sum(x * math.log(x) for x in lam)))
    assert vendi_score(3.0 * pair) == pytest.approx(
        vendi_score(pair)
    )  # cosine: the scale of embeddings does not matter


def test_within_prompt_vendi_averages_prompts():
    embeddings = torch.cat([torch.ones(2, 3), torch.eye(3)[:2]])
    assert within_prompt_vendi(embeddings, ["a", "a", "b", "b"]) == pytest.approx((1.0 + 2.0) / 2)
    assert math.isnan(within_prompt_vendi(embeddings[:2], ["a", "b"]))  # one sample per prompt: no diversity to measure


def test_eval_file_names_round_trip():
    assert parse_eval_image(grid_name(320)) == ("grid", 320)
    assert parse_eval_image(samples_name(0)) == ("samples", 0)
    assert parse_eval_image("prompts.json") is None and parse_eval_image("queries_12.jpg") is None


def test_image_strip_round_trips():
    images = torch.rand(3, 3, 8, 8)
    tiles = split_strip(image_strip(images), 3)
    back = (
        torch.stack(
            [torch.tensor(list(t.getdata()), dtype=torch.float32).reshape(8, 8, 3).permute(2, 0, 1) for t in tiles]
        )
        / 255
    )
    assert torch.allclose(back, images, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="does not hold"):
        split_strip(image_strip(images), 5)


def test_evenly_spaced_covers_the_list():
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced([1, 2], 5) == [1, 2]
    assert evenly_spaced(list(range(7)), 1) == [0]


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
    "run.num_epochs": 1,
    "run.eval_every": 1,
    "run.eval_num_prompts": 2,
    "run.loggers": ["csv"],
    "run.threads": 1,
    "run.eval_rewards": ["jpeg_compressibility"],
}


def _run(tmp_path, name, **extra):
    config = load_config(None, {**BASE, "run.output_dir": str(tmp_path), "run.name": name, **extra})
    run(config)
    return pd.read_csv(tmp_path / name / "csv" / "metrics.csv")


def test_a_run_starts_with_the_base_model_and_counts_eval_samples_apart(tmp_path):
    heldout._BASE_EVALUATIONS.clear()
    df = _run(tmp_path, "a")
    assert list(df["step"]) == [0, 4]  # 0 queries: the base model; then one epoch of 4 reward queries
    start, end = df.iloc[0], df.iloc[1]
    assert start["epoch"] == -1 and math.isnan(start["reward_mean"])
    assert start["eval_samples"] == 4 and end["eval_samples"] == 8  # 2 prompts x 2 samples per evaluation
    assert end["reward_queries"] == 4  # evaluation samples are not reward queries
    assert (
        not math.isnan(start["eval_score_jpeg_compressibility"]) and "eval_score_brightness" not in df
    )  # own reward skipped
    folder = tmp_path / "a" / "eval_images"
    assert {p.name for p in folder.iterdir()} == {
        grid_name(0),
        samples_name(0),
        grid_name(4),
        samples_name(4),
        "prompts.json",
    }


@pytest.mark.slow
def test_every_seed_sees_the_same_evaluation_noise_and_the_base_evaluation_is_shared(tmp_path):
    heldout._BASE_EVALUATIONS.clear()
    first = _run(tmp_path, "s0", **{"run.seed": 0})
    assert len(heldout._BASE_EVALUATIONS) == 1
    second = _run(tmp_path, "s1", **{"run.seed": 1})  # reuses the base-model evaluation of "s0"
    assert len(heldout._BASE_EVALUATIONS) == 1
    heldout._BASE_EVALUATIONS.clear()
    fresh = _run(tmp_path, "s2", **{"run.seed": 2})  # evaluates it again
    evals = [c for c in first.columns if c.startswith("eval_")]
    for df in (second, fresh):
        assert df.iloc[0][evals].tolist() == first.iloc[0][evals].tolist()
    assert (tmp_path / "s1" / "eval_images" / samples_name(0)).read_bytes() == (
        tmp_path / "s2" / "eval_images" / samples_name(0)
    ).read_bytes()
    assert first.iloc[1]["reward_mean"] != second.iloc[1]["reward_mean"]  # the training itself differs by seed
    other = _run(tmp_path, "e", **{"run.eval_seed": 7})
    assert other.iloc[0]["eval_reward_mean"] != first.iloc[0]["eval_reward_mean"]
