"""Does a step along the DDPO policy gradient raise the reward? (first-order check, diagnostic for #4)

At the base model, estimates the mean PPO-loss gradient (ratio 1, every timestep) over
``--batches`` fresh batches of ``--batch-size`` samples, as ``ddpo_gradient_snr.py`` does, then
moves the LoRA weights a distance ``eps`` along it (``eps > 0``: reward ascent, ``eps < 0``:
descent) and scores each on ``default_budget.py``'s fixed set (same prompts and noise for every
step, drawn independently of the gradient's samples).

It separates a wrong gradient from a hostile landscape. Along a correct gradient,
``f(+eps) > f(-eps)``; the reward along the line is about ``f(0) + slope * eps - curvature * eps^2``,
so the best step gains ``slope^2 / (4 curvature)``. If that is below the run-to-run noise, no
optimiser following the gradient can raise the reward beyond it.

    python benchmark/probes/ddpo_gradient_step.py                                     # alignment reward
    python benchmark/probes/ddpo_gradient_step.py reward.name=jpeg_compressibility    # the JPEG control
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

if __package__ in (None, ""):  # run as a script from a checkout: the suite is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.default_budget import fixed_set_score
from benchmark.probes.ddpo_gradient_snr import CONFIG, base_module, batch_gradient
from diffexp.algorithms.config import parse_overrides


def line_fit(rewards: dict[float, float]) -> tuple[float, float]:
    """Slope and curvature of ``f(eps) = f(0) + slope * eps - curvature * eps^2`` from the symmetric
    pairs (least squares over every ``+-eps`` measured with ``f(0)``)."""
    pairs = [e for e in rewards if e > 0 and -e in rewards]
    if 0.0 not in rewards or not pairs:
        raise ValueError("need f(0) and at least one +-eps pair")
    slope = sum((rewards[e] - rewards[-e]) * e for e in pairs) / sum(2 * e * e for e in pairs)
    curvature = sum((2 * rewards[0.0] - rewards[e] - rewards[-e]) * e * e for e in pairs) / sum(2 * e**4 for e in pairs)
    return slope, curvature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, key=value")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps",
        type=float,
        nargs="+",
        default=[0.0, 1.5, -1.5, 0.5, -0.5],
        help="distances along the unit gradient (LoRA weight norm; a default run ends near 1.5)",
    )
    parser.add_argument("--fixed-set", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    start = time.perf_counter()
    module = base_module(overrides, args.batch_size, args.seed)
    direction = torch.stack([batch_gradient(module) for _ in range(args.batches)]).mean(0)
    print(
        f"{CONFIG} {args.overrides}: mean gradient of {args.batches} x {args.batch_size} samples, "
        f"norm {direction.norm():.3e} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    direction /= direction.norm()
    base = parameters_to_vector(module.trainable).detach().clone()  # the same order batch_gradient flattens in
    rewards = {}
    for eps in args.steps:
        with torch.no_grad():
            vector_to_parameters(base - eps * direction, module.trainable)  # minus the loss gradient: ascent
        rewards[eps], truth = fixed_set_score(module, args.fixed_set)
        print(
            f"  step {eps:+.2f}: fixed-set reward {rewards[eps]:.3f}, ground truth {truth:.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    slope, curvature = line_fit(rewards)
    if curvature > 0:
        print(
            f"slope {slope:+.3f} per unit step, curvature {curvature:.3f}; best step {slope / (2 * curvature):+.2f} "
            f"gains {slope**2 / (4 * curvature):.3f}"
        )
    else:
        print(f"slope {slope:+.3f}, curvature {curvature:.3f} (not concave: no best step along the line)")


if __name__ == "__main__":
    main()
