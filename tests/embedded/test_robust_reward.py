"""The robust alignment stage: its image negatives are wrong by the evaluator, its PGD finds the
L-infinity maximiser of a linear loss, and the stage trains, resumes, keeps the reward's units
and ships as the alignment reward."""

import json

import numpy as np
import pytest
import torch

from diffexp.embedded import robust_reward
from diffexp.embedded.ground_truth import evaluate
from diffexp.embedded.scenes import caption, render, sample_spec, to_tensor
from diffexp.embedded.settings import TrainSettings


def test_image_negatives_fail_the_composition_they_came_from():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, "composition") for _ in range(60)]
    negatives = [robust_reward.image_negative(s, rng) for s in specs]
    kinds = {len(n.objects) for n in negatives}
    assert kinds == {1, 2}  # both a missing object and swapped places occur
    truth_full = evaluate(to_tensor(np.stack([render(s) for s in specs])), [caption(s) for s in specs])
    truth_negative = evaluate(to_tensor(np.stack([render(n) for n in negatives])), [caption(s) for s in specs])
    assert truth_full.mean() > 0.9  # the evaluator reads clean renders
    assert truth_negative.mean() < 0.1


def test_pgd_reaches_the_corner_of_the_ball_for_a_linear_loss():
    """For loss = <w, x> the L-infinity maximiser within eps is x + eps sign(w), from any start."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8) * 0.8 + 0.1  # away from the [0, 1] bounds
    w = torch.randn_like(x)
    eps = 0.05
    adv = robust_reward.pgd(lambda z: (w * z).sum(), x, eps, steps=3, rng=torch.Generator().manual_seed(1))
    torch.testing.assert_close(adv, x + eps * w.sign(), rtol=0, atol=1e-6)
    # and stays in [0, 1] where the ball crosses it
    edge = torch.zeros_like(x)
    assert robust_reward.pgd(lambda z: -(z.sum()), edge, eps, 3, torch.Generator().manual_seed(1)).min() >= 0


def _fake_pool(settings, pipe, per_prompt):
    prompts = robust_reward._pool_prompts()
    rng = np.random.default_rng(0)
    index = [i for _ in range(per_prompt) for i in range(len(prompts))]
    specs = [sample_spec(rng, labels=None, kind="composition") for _ in index]
    images = to_tensor(np.stack([render(s) for s in specs]))
    correct = torch.tensor([k < len(prompts) for k in range(len(index))])  # draw 0 correct, the rest not
    return {"images": (images * 255).round().to(torch.uint8), "prompt": torch.tensor(index), "correct": correct}


@pytest.mark.slow
def test_the_stage_trains_resumes_keeps_the_scale_and_ships(tmp_path, monkeypatch):
    from transformers import CLIPModel

    from diffexp.cli import main
    from diffexp.embedded import architecture
    from diffexp.embedded.training import train

    settings = TrainSettings(
        work_dir=str(tmp_path / "work"),
        checkpoint_every=1,
        threads=1,
        robust_steps=2,
        robust_batch=8,
        robust_pool_draws=2,
    )
    with pytest.raises(FileNotFoundError, match="reward_clip stage must finish first"):
        robust_reward.train_robust_reward_clip(settings)
    torch.manual_seed(0)
    source = architecture.reward_clip()
    source.save_pretrained(tmp_path / "work" / "reward_clip" / "model")
    (tmp_path / "work" / "reward_clip" / "DONE").write_text("{}")
    monkeypatch.setattr(robust_reward, "generator_pool", _fake_pool)
    monkeypatch.setattr(robust_reward, "_generator", lambda settings: None)
    train(settings, only=["reward_clip_robust"])
    stage = tmp_path / "work" / "reward_clip_robust"
    record = json.loads((stage / "DONE").read_text())
    assert (
        record["steps"] == 2
        and record["eps"] == 0.06
        and record["pool_samples"] == 2 * len(robust_reward._pool_prompts())
    )
    tuned = CLIPModel.from_pretrained(stage / "model")
    assert torch.equal(tuned.logit_scale, source.logit_scale)  # the reward's units are kept
    moved = [not torch.equal(a, b) for a, b in zip(tuned.vision_model.parameters(), source.vision_model.parameters())]
    assert all(moved)
    before = (stage / "weights.safetensors").stat().st_mtime_ns
    train(settings, only=["reward_clip_robust"])  # done: skipped
    assert (stage / "weights.safetensors").stat().st_mtime_ns == before
    import diffexp.embedded.cli as embedded_cli

    monkeypatch.setattr(embedded_cli, "WEIGHTS_DIR", tmp_path / "weights")  # never the shipped weights
    assert main(["embedded", "ship", "--work-dir", str(settings.work_dir)]) == 0
    shipped = CLIPModel.from_pretrained(tmp_path / "weights" / "reward_clip")
    torch.testing.assert_close(
        shipped.vision_model.embeddings.patch_embedding.weight.float(),
        tuned.vision_model.embeddings.patch_embedding.weight.half().float(),
    )


def test_the_robust_stage_runs_only_when_named(tmp_path, monkeypatch):
    from diffexp.embedded import training

    ran = []
    fake = {name: (lambda settings, name=name: ran.append(name)) for name in training.stages()}
    monkeypatch.setattr(training, "stages", lambda: fake)
    settings = TrainSettings(work_dir=str(tmp_path), threads=1)
    training.train(settings)
    assert "reward_clip_robust" not in ran and ran[-2:] == ["reward_clip", "aesthetic"]
    ran.clear()
    training.train(settings, only=["reward_clip", "reward_clip_robust"])
    assert ran == ["reward_clip", "reward_clip_robust"]


def test_a_pool_without_both_outcomes_is_refused():
    prompts = ["a red circle above a blue square"]
    pool = {"images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "prompt": torch.tensor([0, 0])}
    pool["correct"] = torch.tensor([True, True])
    with pytest.raises(ValueError, match="both correct and incorrect"):
        robust_reward.pool_outcomes(pool, len(prompts))
    pool["correct"] = torch.tensor([True, False])
    outcomes = robust_reward.pool_outcomes(pool, len(prompts))
    images, texts = robust_reward.pool_pairs(pool, outcomes, prompts, np.random.default_rng(0), 4)
    assert images.shape == (8, 3, 32, 32) and texts == prompts * 4
