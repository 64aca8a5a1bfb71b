"""How consistent is the DDPO policy gradient between independent batches? (diagnostic for #4)

At the base model, draws ``--batches`` independent batches of ``--batch-size`` samples (grouped
prompts, as the config says), normalises advantages within each batch, and computes the PPO loss
gradient at ratio 1 over *every* timestep. The mean pairwise cosine c between the batch gradients
gives the gradient's signal-to-noise ratio: for independent estimates of a mean direction mu with
per-batch noise variance sigma^2 / B, c = s / (1 + s) with s = B |mu|^2 / sigma^2. From s, the
summed gradient of N samples points along mu with cosine sqrt(sN / (1 + sN)), sN = s N / B.

Comparing rewards separates two reasons a reward may not rise: a noisy gradient (low s), or a
landscape where a step along a well-estimated gradient gains little.

    python benchmark/ddpo_gradient_snr.py                       # the three cases below
    python benchmark/ddpo_gradient_snr.py --batches 4 --batch-size 64
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from diffexp.algorithms.config import load_config
from diffexp.algorithms.losses import ppo_clip_loss
from diffexp.algorithms.runner import build_module
from diffexp.algorithms.stat_tracker import PerPromptStatTracker

CONFIG = "experiments/embedded/ddpo.yaml"
CASES = {
    "alignment, relation prompts": {},
    "alignment, object prompts": {"prompts.set": "embedded_objects"},
    "JPEG compressibility": {"reward.name": "jpeg_compressibility"},
}


def batch_gradient(module, minibatch: int = 16) -> torch.Tensor:
    """Flattened gradient of the PPO loss (ratio 1) of one fresh batch, over all its timesteps."""
    traj = module.generate()
    rewards = module.reward(traj).numpy()
    # A fresh tracker per batch keeps the batches independent; its buffer holds the whole batch, so
    # a prompt drawn twice in one batch is normalised over all its samples.
    tracker = PerPromptStatTracker(len(traj), module.config.sample.samples_per_prompt, module.config.train.stat_tracking.scale)
    adv = torch.tensor(tracker.update(list(traj.prompts), rewards), dtype=torch.float32)
    clip, adv_max = module.config.train.clip_range, module.config.train.adv_clip_max
    for p in module.trainable:
        p.grad = None
    n, steps = len(traj), traj.log_probs.shape[1]
    for j in range(steps):
        for idx in torch.arange(n).split(minibatch):
            sub = traj.select(idx)
            log_prob = module.sampler.step_log_prob(sub, torch.full((len(idx),), j))
            loss, _ = ppo_clip_loss(log_prob, sub.log_probs[:, j], adv[idx], clip, adv_max)
            (loss * len(idx) / (n * steps)).backward()
    return torch.cat([p.grad.flatten() for p in module.trainable])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--budget", type=int, default=960, help="queries N for the summed-gradient cosine")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.batches} batches of {args.batch_size} per case, {CONFIG}; cos(N) = cosine of the summed gradient of N={args.budget} samples with the mean")
    for name, overrides in CASES.items():
        start = time.perf_counter()
        module = build_module(load_config(CONFIG, {**overrides, "sample.batch_size": args.batch_size, "sample.num_batches_per_epoch": 1}))
        module.sampler = module.make_sampler()
        module.sample_generator.manual_seed(args.seed)
        grads = torch.stack([batch_gradient(module) for _ in range(args.batches)])
        cos = [torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0).item()
               for a, b in itertools.combinations(range(args.batches), 2)]
        c = float(np.mean(cos))
        s = c / (1 - c)
        s_n = s * args.budget / args.batch_size
        print(f"  {name:<28} pairwise cos {c:.3f} (min {min(cos):+.3f}, max {max(cos):+.3f})  "
              f"s = {s:.3f}  cos(N) = {np.sqrt(s_n / (1 + s_n)) if s_n > 0 else float('nan'):.2f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
