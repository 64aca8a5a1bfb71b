"""Does the embedded alignment reward's pixel gradient carry meaning? Three figures of one reward.

1. **Pixel ascent** (the probe of docs/FINDINGS.md): base-model samples of every other training
   composition x 2 (8 DDIM steps, CFG 5); 20 Adam steps on the pixels raise the reward of each
   sample for its own prompt. A reward whose gradient means something cannot be raised much
   without the ground truth rising; the figure is the mean rise on samples whose ground truth did
   not rise, beside the RMS pixel change.
2. **Within-prompt AUC**: every 4th training composition x 16 samples (20 steps, CFG 5, noise
   seed 11); the reward centred per prompt ranks correct samples above incorrect ones. Also the
   centred means of the three outcomes (an object missing, both drawn in the wrong relation, right).
3. **Spearman** with the ground truth on own and mismatched pairs
   (:func:`diffexp.embedded.measurements.alignment_vs_ground_truth`, the model card's figure).

    python benchmark/reward_robustness.py [--reward DIR ...] [--out benchmark/results/reward_robustness_cpu.txt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu

if __package__ in (None, ""):  # run as a script from a checkout: the suite is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffexp.embedded.ground_truth import evaluate, evaluate_detailed
from diffexp.embedded.measurements import alignment_pairs, alignment_spearman, sample_images
from diffexp.embedded.pipeline import load_world_pipeline
from diffexp.embedded.prompt_sets import get_prompt_set
from diffexp.embedded.rewards import WorldAlignmentReward
from diffexp.embedded.scenes import parse_caption


def pixel_ascent(reward, images: torch.Tensor, texts: list[str], steps: int = 20, lr: float = 3e-3) -> dict:
    """Adam on the pixels (kept in [0, 1]) towards a higher reward for each sample's own prompt."""
    delta = torch.zeros_like(images, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        loss = -reward(images + delta, texts).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.copy_((images + delta).clamp(0, 1) - images)
    adv = (images + delta).detach()
    with torch.no_grad():
        before, after = reward(images, texts), reward(adv, texts)
    truth_before, truth_after = evaluate(images, texts), evaluate(adv, texts)
    flat = truth_after <= truth_before
    rise = (after - before).numpy()
    return {
        "reward": (float(before.mean()), float(after.mean())),
        "truth": (float(truth_before.mean()), float(truth_after.mean())),
        "rms": float((adv - images).pow(2).mean().sqrt()),
        "rise_truth_flat": float(rise[flat].mean()),
        "n": len(texts),
        "n_flat": int(flat.sum()),
    }


def probe_samples(pipe) -> dict:
    """Every base-model sample the three figures need (they do not depend on the reward)."""
    compositions = [p.text for p in get_prompt_set("relations", "train")]
    ascent_texts = [t for t in compositions[::2] for _ in range(2)]
    auc_prompts = compositions[::4]
    auc_texts = [t for t in auc_prompts for _ in range(16)]
    return {
        "ascent": (sample_images(pipe, ascent_texts, 5.0, 8, seed=0), ascent_texts),
        "auc": (sample_images(pipe, auc_texts, 5.0, 20, seed=11), auc_texts, len(auc_prompts)),
        "rank": alignment_pairs(pipe),
    }


def within_prompt_auc(reward, images: torch.Tensor, texts: list[str], n_prompts: int) -> dict:
    with torch.no_grad():
        scores = reward(images, texts).numpy().reshape(n_prompts, -1)
    centred = (scores - scores.mean(1, keepdims=True)).ravel()
    results = evaluate_detailed(images, texts)
    correct = np.array([r.correct for r in results])
    both = np.array([all(o.detection is not None for o in r.objects) for r in results])
    auc = mannwhitneyu(centred[correct], centred[~correct]).statistic / (correct.sum() * (~correct).sum())
    outcome = {
        "object missing": ~both,
        "both, wrong relation": both & ~correct,
        "both, right relation": correct,
    }
    return {
        "auc": float(auc),
        "n": len(texts),
        "correct_rate": float(correct.mean()),
        "centred_means": {k: float(centred[m].mean()) if m.any() else float("nan") for k, m in outcome.items()},
    }


def measure(reward_dir: Path | None, samples: dict) -> str:
    reward = WorldAlignmentReward(reward_dir)
    t0 = time.time()
    ascent = pixel_ascent(reward, *samples["ascent"])
    auc = within_prompt_auc(reward, *samples["auc"])
    rank = alignment_spearman(reward, *samples["rank"])
    images, texts, _ = samples["rank"]
    composition = [i for i, t in enumerate(texts) if parse_caption(t).relation]
    own_texts = [texts[i] for i in composition]
    own = alignment_spearman(reward, images[composition], own_texts, own_texts)
    lines = [
        f"reward: {reward_dir or 'shipped'}",
        f"pixel ascent ({ascent['n']} samples, 20 Adam steps, lr 3e-3): reward {ascent['reward'][0]:.2f} -> "
        f"{ascent['reward'][1]:.2f}, ground truth {ascent['truth'][0]:.3f} -> {ascent['truth'][1]:.3f}, "
        f"RMS pixel change {ascent['rms']:.3f}",
        f"  mean rise where the ground truth did not rise ({ascent['n_flat']} samples): "
        f"{ascent['rise_truth_flat']:+.2f}",
        f"within-prompt AUC of correct samples ({auc['n']} samples, correct {auc['correct_rate']:.3f}): "
        f"{auc['auc']:.3f}",
        "  centred reward: " + ", ".join(f"{k} {v:+.2f}" for k, v in auc["centred_means"].items()),
        f"Spearman with the ground truth: all pairs {rank['spearman_all_pairs']:.3f}, "
        f"own prompts {rank['spearman_own_prompts']:.3f}, compositions' own prompts {own['spearman_own_prompts']:.3f}",
        f"({time.time() - t0:.0f} s)",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reward", type=Path, nargs="*", help="alignment CLIP folders (default: the shipped one)")
    p.add_argument("--out", type=Path, help="append the figures to this file")
    p.add_argument("--cache", type=Path, help="keep the base-model samples here and reuse them")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if args.cache and args.cache.exists():
        samples = torch.load(args.cache, weights_only=True)
    else:
        samples = probe_samples(load_world_pipeline())
        if args.cache:
            torch.save(samples, args.cache)
    for reward_dir in args.reward or [None]:
        text = measure(reward_dir, samples)
        print(text, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(text + "\n\n")


if __name__ == "__main__":
    main()
