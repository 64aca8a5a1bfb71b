"""How consistent is the DDPO policy gradient between independent batches? (diagnostic for #4)

At the base model, draws ``--batches`` independent batches of ``--batch-size`` samples (grouped
prompts, as the config says), normalises advantages within each batch, and computes the PPO loss
gradient at ratio 1 over *every* timestep of ``train.timestep_window``. The mean pairwise cosine c
between the batch gradients gives the gradient's signal-to-noise ratio: for independent estimates
of a mean direction mu with per-batch noise variance sigma^2 / B, c = s / (1 + s) with
s = B |mu|^2 / sigma^2. From s, the summed gradient of N samples points along mu with cosine
sqrt(sN / (1 + sN)), sN = s N / B.

Comparing rewards separates two reasons a reward may not rise: a noisy gradient (low s), or a
landscape where a step along a well-estimated gradient gains little.

    python benchmark/probes/ddpo_gradient_snr.py                       # the three cases below
    python benchmark/probes/ddpo_gradient_snr.py --batches 4 --batch-size 64
    # per LoRA target kind, over the first quarter of the steps only:
    python benchmark/probes/ddpo_gradient_snr.py --case "alignment, relation prompts" \\
        --by-module 'train.timestep_window=[0,0.25]'
"""

from __future__ import annotations

import argparse
import itertools
import re
import time

import lightning as L
import numpy as np
import torch

from diffexp.algorithms.config import load_config, parse_overrides
from diffexp.algorithms.losses import ppo_clip_loss
from diffexp.algorithms.runner import build_module
from diffexp.algorithms.stat_tracker import PerPromptStatTracker

CONFIG = "diffexp/embedded/configs/ddpo.yaml"
CASES = {
    "alignment, relation prompts": {},
    "alignment, object prompts": {"prompts.set": "embedded_objects"},
    "JPEG compressibility": {"reward.name": "jpeg_compressibility"},
}


def base_module(overrides: dict, batch_size: int, sampling_seed: int):
    """The config's module at its base weights, drawing one batch of ``batch_size`` per
    ``generate``. The LoRA A matrices are drawn as a training run of the config's ``run.seed``
    draws them: the B matrices' gradient depends on them, so an unseeded draw would give another
    gradient direction in every process."""
    config = load_config(CONFIG, {**overrides, "sample.batch_size": batch_size, "sample.num_batches_per_epoch": 1})
    L.seed_everything(config.run.seed, verbose=False)  # as runner.run does before build_module
    module = build_module(config)
    module.sampler = module.make_sampler()
    module.streams.seed(sampling_seed)
    return module


def batch_gradient(module, minibatch: int = 16) -> torch.Tensor:
    """Flattened gradient of the PPO loss (ratio 1) of one fresh batch, over every timestep of the
    config's ``train.timestep_window`` (the whole trajectory by default)."""
    traj = module.generate()
    rewards = module.reward(traj).numpy()
    # A fresh tracker per batch keeps the batches independent; its buffer holds the whole batch, so
    # a prompt drawn twice in one batch is normalised over all its samples.
    tracker = PerPromptStatTracker(
        len(traj), module.config.sample.samples_per_prompt, module.config.train.stat_tracking.scale
    )
    adv = torch.tensor(tracker.update(list(traj.prompts), rewards), dtype=torch.float32)
    clip, adv_max = module.config.train.clip_range, module.config.train.adv_clip_max
    for p in module.trainable:
        p.grad = None
    n = len(traj)
    steps = module.config.train.window_steps(traj.log_probs.shape[1])  # every step of train.timestep_window
    for j in steps:
        for idx in torch.arange(n).split(minibatch):
            sub = traj.select(idx)
            log_prob = module.sampler.step_log_prob(sub, torch.full((len(idx),), j))
            loss, _ = ppo_clip_loss(log_prob, sub.log_probs[:, j], adv[idx], clip, adv_max)
            (loss * len(idx) / (n * len(steps))).backward()
    return torch.cat([p.grad.flatten() for p in module.trainable])


def lora_groups(module) -> dict[str, torch.Tensor]:
    """Indices into ``batch_gradient``'s vector of each LoRA target kind (``attn2.to_k`` = every
    cross-attention key projection); only the B matrices, the A matrices' gradient is 0 at the base."""
    names = [n for n, _ in module.unet.named_parameters() if "lora_" in n]  # add_lora's order
    sizes = [p.numel() for p in module.trainable]
    offsets = np.cumsum([0, *sizes])
    groups: dict[str, list[int]] = {}
    for name, lo, hi in zip(names, offsets[:-1], offsets[1:]):
        if "lora_B" in name:
            kind = re.search(r"(attn\d)\.(to_\w+)", name)
            groups.setdefault(".".join(kind.groups()) if kind else name, []).extend(range(lo, hi))
    return {k: torch.tensor(v) for k, v in sorted(groups.items())}


def consistency(grads: torch.Tensor, batch_size: int, budget: int) -> str:
    """Mean pairwise cosine of the batch gradients, the SNR s it implies and cos(N)."""
    cos = [
        torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0).item()
        for a, b in itertools.combinations(range(len(grads)), 2)
    ]
    c = float(np.mean(cos))
    s = c / (1 - c)
    s_n = s * budget / batch_size
    return (
        f"pairwise cos {c:+.3f} (min {min(cos):+.3f}, max {max(cos):+.3f})  s = {s:+.3f}  "
        f"cos(N) = {np.sqrt(s_n / (1 + s_n)) if s_n > 0 else float('nan'):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every case, key=value")
    parser.add_argument("--case", choices=list(CASES), action="append", help="only these cases (repeatable)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--budget", type=int, default=960, help="queries N for the summed-gradient cosine")
    parser.add_argument("--by-module", action="store_true", help="also the cosine of each LoRA target kind's part")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    extra = parse_overrides(args.overrides)
    if args.by_module and extra.get("model.use_lora") is False:
        parser.error("--by-module splits the LoRA weights; it needs model.use_lora=true")
    print(
        f"{args.batches} batches of {args.batch_size} per case, {CONFIG} {args.overrides}; "
        f"cos(N) = cosine of the summed gradient of N={args.budget} samples with the mean"
    )
    for name in args.case or CASES:
        start = time.perf_counter()
        module = base_module({**CASES[name], **extra}, args.batch_size, args.seed)
        grads = torch.stack([batch_gradient(module) for _ in range(args.batches)])
        print(
            f"  {name:<28} {consistency(grads, args.batch_size, args.budget)}  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        if args.by_module:
            for kind, index in lora_groups(module).items():
                print(f"    {kind:<26} {consistency(grads[:, index], args.batch_size, args.budget)}", flush=True)


if __name__ == "__main__":
    main()
