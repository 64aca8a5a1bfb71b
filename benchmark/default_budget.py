"""Do the default run configs raise their reward well beyond run-to-run noise? (issues #4, #5)

Runs the embedded world's default DDPO and AlignProp configs at their whole default budget and
prints, per run, the mean training reward of the first and last 3 epochs and the gain, then per
group the mean gain against the spread between seeds.

The training-batch reward is a noisy gauge (each epoch draws other prompts and noise, and under
exploration other CFG scales), so each run is also measured on a *fixed set*: the same
train-split prompts and the same initial noise, sampled without exploration at the config's CFG
scale, once with the base model and once with the run's final LoRA weights. "fixed gain" is the
paired difference; the seed spread of the final fixed-set reward is the run-to-run noise.

    python benchmark/default_budget.py --out runs/default_budget          # every run below
    python benchmark/default_budget.py --only ddpo_jpeg                    # a subset (name prefix)

DDPO: alignment and JPEG-compressibility rewards, seeds 0 and 1 in one process, and seed 0 as a
2-process DDP run (gloo; 16 samples per process per epoch, the same 32 queries per epoch).
AlignProp: the aesthetic reward under the four strategies (seed 0) plus baseline seed 1, and the
alignment reward under the four strategies, seeds 0, 1 and 2. Finished runs are not
re-run (use a new --out after the shipped embedded weights change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DDPO, ALIGNPROP = ROOT / "diffexp/embedded/configs/ddpo.yaml", ROOT / "diffexp/embedded/configs/alignprop.yaml"
# 2 processes x 16 samples, minibatches of 4 per process: the single process's 4 optimiser steps of 8.
DDP2 = ["run.devices=2", "sample.num_batches_per_epoch=1", "train.batch_size=4", "run.threads=1"]
JPEG = ["reward.name=jpeg_compressibility"]
ALIGNMENT = ["reward.name=embedded_alignment"]

RUNS: dict[str, tuple[Path, list[str]]] = {
    "ddpo_alignment_s0": (DDPO, ["run.seed=0"]),
    "ddpo_alignment_s1": (DDPO, ["run.seed=1"]),
    "ddpo_jpeg_s0": (DDPO, [*JPEG, "run.seed=0"]),
    "ddpo_jpeg_s1": (DDPO, [*JPEG, "run.seed=1"]),
    "ddpo_alignment_ddp2_s0": (DDPO, [*DDP2, "run.seed=0"]),
    "ddpo_jpeg_ddp2_s0": (DDPO, [*JPEG, *DDP2, "run.seed=0"]),
    **{
        f"alignprop_aesthetic_{s}_s0": (ALIGNPROP, [f"exploration.strategy={s}", "run.seed=0"])
        for s in ("baseline", "cfg", "phrase", "diffexp")
    },
    "alignprop_aesthetic_baseline_s1": (ALIGNPROP, ["run.seed=1"]),
    **{
        f"alignprop_alignment_{s}_s{seed}": (ALIGNPROP, [*ALIGNMENT, f"exploration.strategy={s}", f"run.seed={seed}"])
        for s in ("baseline", "cfg", "phrase", "diffexp")
        for seed in (0, 1, 2)
    },
}


FIXED_SET_SEED = 2026


@torch.no_grad()
def fixed_set_score(module, num_samples: int) -> tuple[float, float]:
    """Mean reward and ground-truth accuracy of ``num_samples`` fixed-seed samples of ``module``
    as it stands (baseline sampling: no exploration)."""
    from diffexp.embedded.measurements import evaluate

    generator = torch.Generator().manual_seed(FIXED_SET_SEED)  # draws the prompts, then the noise
    order = torch.randperm(len(module.train_prompts), generator=generator).tolist()
    prompts = [module.train_prompts[order[i % len(order)]] for i in range(num_samples)]
    traj = module.heldout.sample(prompts, generator)
    rewards = module.reward_fn(traj.images, traj.prompts)
    return rewards.mean().item(), float(np.mean(evaluate(traj.images, traj.prompts)))


def load_run(run_dir: Path):
    """The run's module (base weights) and the trainable state dict of its last checkpoint."""
    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.runner import build_module

    module = build_module(load_config(run_dir / "config.yaml"))
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return module, trained


def fixed_set_rewards(run_dir: Path, num_samples: int, trained: bool) -> tuple[float, float]:
    """Fixed-set figures of a finished run's base model (``trained=False``) or final weights."""
    module, state = load_run(run_dir)
    if trained:
        module.load_trainable(state)
    return fixed_set_score(module, num_samples)


def fixed_set(run_dir: Path, num_samples: int) -> dict[str, float]:
    """Base and final fixed-set figures of a finished run (cached; the base is shared by every run
    whose model, prompts, reward and sampling settings agree)."""
    cache = run_dir / f"fixed_set_{num_samples}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    shared = {k: config[k] for k in ("model", "prompts", "reward")}
    shared.update(steps=config["sample"]["num_steps"], guidance=config["exploration"]["guidance_scale"], n=num_samples)
    key = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]
    base_cache = run_dir.parent / f"fixed_set_base_{key}.json"
    if not base_cache.exists():
        base_cache.write_text(
            json.dumps(dict(zip(("fixed_base", "gt_base"), fixed_set_rewards(run_dir, num_samples, trained=False))))
        )
    figures = json.loads(base_cache.read_text())
    figures.update(zip(("fixed_final", "gt_final"), fixed_set_rewards(run_dir, num_samples, trained=True)))
    figures["fixed_gain"] = figures["fixed_final"] - figures["fixed_base"]
    cache.write_text(json.dumps(figures, indent=1))
    return figures


def summarise(out: Path, names: list[str], num_fixed: int) -> pd.DataFrame:
    rows = []
    for name in names:
        path = out / name / "csv" / "metrics.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path).dropna(subset=["reward_mean"])
        first, last = df["reward_mean"].iloc[:3].mean(), df["reward_mean"].iloc[-3:].mean()
        rows.append(
            {
                "run": name,
                "group": name.rsplit("_s", 1)[0],
                "epochs": len(df),
                "queries": int(df["reward_queries"].iloc[-1]),
                "first3": first,
                "last3": last,
                "gain": last - first,
                **(fixed_set(out / name, num_fixed) if num_fixed else {}),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/default_budget"))
    parser.add_argument("--only", default="", help="run only names starting with this")
    parser.add_argument("--summary-only", action="store_true", help="print the table of finished runs, run nothing")
    parser.add_argument(
        "--fixed-set", type=int, default=128, metavar="N", help="fixed-set samples per measurement (0: skip)"
    )
    args = parser.parse_args()
    names = [n for n in RUNS if n.startswith(args.only)]
    for name in names if not args.summary_only else []:
        config, overrides = RUNS[name]
        if (args.out / name / "csv" / "metrics.csv").exists() and not (
            args.out / name / "checkpoints" / "last.ckpt.tmp"
        ).exists():
            done = pd.read_csv(args.out / name / "csv" / "metrics.csv")
            if len(done.dropna(subset=["reward_mean"])) >= 30:
                continue
        print(f"=== {name}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "diffexp",
                "train",
                "--config",
                str(config),
                *overrides,
                f"run.output_dir={args.out}",
                f"run.name={name}",
                "run.loggers=[csv]",
            ],
            check=True,
        )
    table = summarise(args.out, names, args.fixed_set)
    if table.empty:
        print("no finished runs")
        return
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\nper group: mean gain (last 3 - first 3 epochs) vs. spread of the final reward between seeds")
    for group, g in table.groupby("group", sort=False):
        spread = statistics.stdev(g["last3"]) if len(g) > 1 else float("nan")
        print(
            f"  {group:<32} runs {len(g)}  gain {g['gain'].mean():+.3f}  final {g['last3'].mean():.3f}  seed std "
            f"{spread:.3f}"
        )
    if "fixed_gain" in table:
        print(
            f"\nper group, fixed set ({args.fixed_set} samples, same prompts and noise): base -> final reward, gain, "
            "seed std of the final"
        )
        for group, g in table.groupby("group", sort=False):
            spread = statistics.stdev(g["fixed_final"]) if len(g) > 1 else float("nan")
            print(
                f"  {group:<32} runs {len(g)}  {g['fixed_base'].mean():.3f} -> {g['fixed_final'].mean():.3f}  "
                f"gain {g['fixed_gain'].mean():+.3f}  seed std {spread:.3f}  ground truth {g['gt_base'].mean():.3f} "
                f"-> {g['gt_final'].mean():.3f}"
            )


if __name__ == "__main__":
    main()
