"""Do the default run configs raise their reward well beyond run-to-run noise? (issues #4, #5)

Runs the embedded world's default DDPO and AlignProp configs at their whole default budget and
prints, per run, the mean training reward of the first and last 3 epochs and the gain, then per
group the mean gain against the spread between seeds:

    python benchmark/default_budget.py --out runs/default_budget          # every run below
    python benchmark/default_budget.py --only ddpo_jpeg                    # a subset (name prefix)

DDPO: alignment and JPEG-compressibility rewards, seeds 0 and 1 in one process, and seed 0 as a
2-process DDP run (gloo; 16 samples per process per epoch, the same 32 queries per epoch).
AlignProp: the aesthetic reward under the four strategies (seed 0) plus baseline seed 1, and the
alignment reward (baseline seeds 0, 1; the other three strategies seed 0). Finished runs are not
re-run (use a new --out after the shipped embedded weights change).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DDPO, ALIGNPROP = ROOT / "experiments/embedded/ddpo.yaml", ROOT / "experiments/embedded/alignprop.yaml"
DDP2 = ["run.devices=2", "sample.num_batches_per_epoch=1", "train.gradient_accumulation_steps=1", "run.threads=1"]
JPEG = ["reward.name=jpeg_compressibility"]

RUNS: dict[str, tuple[Path, list[str]]] = {
    "ddpo_alignment_s0": (DDPO, ["run.seed=0"]),
    "ddpo_alignment_s1": (DDPO, ["run.seed=1"]),
    "ddpo_jpeg_s0": (DDPO, [*JPEG, "run.seed=0"]),
    "ddpo_jpeg_s1": (DDPO, [*JPEG, "run.seed=1"]),
    "ddpo_alignment_ddp2_s0": (DDPO, [*DDP2, "run.seed=0"]),
    "ddpo_jpeg_ddp2_s0": (DDPO, [*JPEG, *DDP2, "run.seed=0"]),
    **{f"alignprop_aesthetic_{s}_s0": (ALIGNPROP, [f"exploration.strategy={s}", "run.seed=0"])
       for s in ("baseline", "cfg", "phrase", "diffexp")},
    "alignprop_aesthetic_baseline_s1": (ALIGNPROP, ["run.seed=1"]),
    "alignprop_alignment_baseline_s0": (ALIGNPROP, ["reward.name=embedded_alignment", "run.seed=0"]),
    "alignprop_alignment_baseline_s1": (ALIGNPROP, ["reward.name=embedded_alignment", "run.seed=1"]),
    **{f"alignprop_alignment_{s}_s0": (ALIGNPROP, ["reward.name=embedded_alignment", f"exploration.strategy={s}", "run.seed=0"])
       for s in ("cfg", "phrase", "diffexp")},
}


def summarise(out: Path, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        path = out / name / "csv" / "metrics.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path).dropna(subset=["reward_mean"])
        first, last = df["reward_mean"].iloc[:3].mean(), df["reward_mean"].iloc[-3:].mean()
        rows.append({"run": name, "group": name.rsplit("_s", 1)[0], "epochs": len(df), "queries": int(df["reward_queries"].iloc[-1]),
                     "first3": first, "last3": last, "gain": last - first})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/default_budget"))
    parser.add_argument("--only", default="", help="run only names starting with this")
    parser.add_argument("--summary-only", action="store_true", help="print the table of finished runs, run nothing")
    args = parser.parse_args()
    names = [n for n in RUNS if n.startswith(args.only)]
    for name in names if not args.summary_only else []:
        config, overrides = RUNS[name]
        if (args.out / name / "csv" / "metrics.csv").exists() and not (args.out / name / "checkpoints" / "last.ckpt.tmp").exists():
            done = pd.read_csv(args.out / name / "csv" / "metrics.csv")
            if len(done.dropna(subset=["reward_mean"])) >= 30:
                continue
        print(f"=== {name}", flush=True)
        subprocess.run([sys.executable, "-m", "diffexp", "train", "--config", str(config), *overrides,
                        f"run.output_dir={args.out}", f"run.name={name}", "run.loggers=[csv]"], check=True)
    table = summarise(args.out, names)
    if table.empty:
        print("no finished runs")
        return
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\nper group: mean gain (last 3 - first 3 epochs) vs. spread of the final reward between seeds")
    for group, g in table.groupby("group", sort=False):
        spread = statistics.stdev(g["last3"]) if len(g) > 1 else float("nan")
        print(f"  {group:<32} runs {len(g)}  gain {g['gain'].mean():+.3f}  final {g['last3'].mean():.3f}  seed std {spread:.3f}")


if __name__ == "__main__":
    main()
