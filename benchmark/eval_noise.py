"""Where a cell's seed-to-seed spread comes from: the evaluation set's noise, or training.

For each training seed of one arm of a finished study, the run's final weights and the base model
are evaluated on the study's evaluation prompts under several evaluation-noise seeds
(``run.eval_seed``; the study itself uses one). Two variance components of the final reward follow:
across evaluation seeds for one run (what a larger or re-drawn evaluation set would average away)
and across training seeds at one evaluation seed (what more seeds average away); and the same for
the gain over the base model, a difference on common evaluation noise.

    python benchmark/eval_noise.py runs/sweeps/embedded_ablation --arm alignprop_aesthetic_baseline \\
        --eval-seeds 12345 1 2 3 4 [--out benchmark/results/eval_noise_cpu.txt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml


def evaluate_run(trial_dir: Path, eval_seeds: list[int]) -> tuple[list[float], list[float]]:
    """(final rewards, base-model rewards), one per evaluation seed."""
    from diffexp.algorithms.checkpointing import read_checkpoint
    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.runner import build_module

    data = yaml.safe_load((trial_dir / "config.yaml").read_text())
    data.setdefault("run", {}).update({"loggers": [], "mlflow_run_id": None, "output_dir": str(trial_dir.parent)})
    path = trial_dir / "resolved.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    torch.manual_seed(config.run.seed)
    module = build_module(config)
    module.on_fit_start()
    module.heldout.save_images = lambda *args, **kwargs: None  # measurements only
    base, final = [], []
    for seed in eval_seeds:
        module.config.run.eval_seed = seed
        base.append(module.evaluate()["eval_reward_mean"])
    module.load_trainable(read_checkpoint(trial_dir / "checkpoints" / "last.ckpt")["state_dict"])
    for seed in eval_seeds:
        module.config.run.eval_seed = seed
        final.append(module.evaluate()["eval_reward_mean"])
    return final, base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", type=Path)
    p.add_argument("--arm", required=True, help="trial-key prefix, e.g. alignprop_aesthetic_baseline")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[12345, 1, 2, 3, 4])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    trials = sorted(d for d in (args.study_dir / "trials").iterdir() if d.name.startswith(args.arm + "_"))
    if len(trials) < 2:
        raise SystemExit(f"need two or more trials of {args.arm} in {args.study_dir / 'trials'}")
    finals, bases = [], []
    for trial in trials:
        final, base = evaluate_run(trial, args.eval_seeds)
        finals.append(final)
        bases.append(base)
    final, gain = np.array(finals), np.array(finals) - np.array(bases)  # (training seeds x eval seeds)
    lines = [f"{args.arm}: {len(trials)} training seeds x {len(args.eval_seeds)} evaluation seeds {args.eval_seeds}"]
    for name, table in (("final reward", final), ("gain over the base model", gain)):
        across_eval = table.var(axis=1, ddof=1).mean()  # one run, other evaluation noise
        across_train = table.var(axis=0, ddof=1).mean()  # one evaluation noise, other training seeds
        lines.append(
            f"{name}: variance across evaluation seeds {across_eval:.4f}, across training seeds {across_train:.4f}"
        )
        lines += [f"  run {t.name}: " + " ".join(f"{v:.3f}" for v in row) for t, row in zip(trials, table)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
