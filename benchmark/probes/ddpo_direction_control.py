"""Is a DDPO run's reward gain learned, or what any change of the weights would give? (diagnostic for #4)

A small fine-tuned model can gain on some rewards just by drifting: a degraded generator draws
smoother images, which compress better. This control scores, on default_budget.py's fixed set,
the run's LoRA delta next to the same delta negated and to random deltas of the same size (each
``lora_B`` replaced by Gaussian noise of the same Frobenius norm; a zero ``lora_B`` is the base
model). A learned direction gains when applied and loses when negated; drift gains either way.

    python benchmark/probes/ddpo_direction_control.py runs/default_budget_v3/ddpo_jpeg_s0
    python benchmark/probes/ddpo_direction_control.py runs/default_budget_v3/ddpo_alignment_s0 --fixed-set 512
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script from a checkout: the suite is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.default_budget import fixed_set_score, load_run


def lora_variant(trained: dict[str, torch.Tensor], kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The trained LoRA state with every ``lora_B`` zeroed, kept, negated or made random (same norm)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in trained.items():
        if "lora_B" in name:
            if kind == "zero":
                value = torch.zeros_like(value)
            elif kind == "negated":
                value = -value
            elif kind == "random":
                noise = torch.randn(value.shape, generator=generator)
                value = noise * value.norm() / noise.norm()
            elif kind != "trained":
                raise ValueError(f"unknown variant {kind!r}")
        out[name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished LoRA run (config.yaml, checkpoints/last.ckpt)")
    parser.add_argument("--fixed-set", type=int, default=128, metavar="N", help="fixed-set samples per measurement")
    parser.add_argument("--random", type=int, default=2, help="random deltas to score")
    args = parser.parse_args()
    module, trained = load_run(args.run_dir)
    if not any("lora_B" in name for name in trained):
        parser.error(f"{args.run_dir} has no LoRA weights (model.use_lora: false?); the control needs a LoRA run")
    variants = [
        ("base (zero delta)", "zero", 0),
        ("trained", "trained", 0),
        ("negated", "negated", 0),
        *[(f"random {seed}", "random", seed) for seed in range(args.random)],
    ]
    base = None
    for label, kind, seed in variants:
        module.load_trainable(lora_variant(trained, kind, seed))
        reward, accuracy = fixed_set_score(module, args.fixed_set)
        base = reward if base is None else base
        print(
            json.dumps(
                {
                    "run": args.run_dir.name,
                    "delta": label,
                    "reward": round(reward, 4),
                    "gain": round(reward - base, 4),
                    "ground_truth": accuracy,
                    "n": args.fixed_set,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
