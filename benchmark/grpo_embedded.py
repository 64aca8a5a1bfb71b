"""Does GRPO's default embedded config raise the aesthetic reward beyond seed noise? (issue #27)

Trains ``diffexp/embedded/configs/grpo.yaml`` once per seed (each run resumes if interrupted; a finished
run is not re-run) and reads each run's held-out evaluation: the same five objects and the same
noise for every run (``run.eval_seed``), sampled without exploration, at 0 queries (the base model)
and after the last epoch. The gain is the paired difference; the noise is the standard deviation
(ddof 1) of the final value across seeds. The claim holds when the mean gain is at least 3x it.

    python benchmark/grpo_embedded.py --out runs/grpo_embedded --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "diffexp/embedded/configs/grpo.yaml"


def train(out: Path, seed: int, extra: list[str]) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "diffexp", "train", "--config", str(CONFIG), f"run.seed={seed}"]
    command += [f"run.output_dir={out}", f"run.name=seed{seed}", *extra]
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def held_out(out: Path, seed: int) -> dict[str, float]:
    df = pd.read_csv(out / f"seed{seed}" / "csv" / "metrics.csv").dropna(subset=["eval_reward_mean"])
    base, final = df.iloc[0], df.iloc[-1]
    if base["reward_queries"] != 0:
        raise RuntimeError(f"seed {seed}: the first evaluation is at {base['reward_queries']} queries, not 0")
    return {
        "seed": seed,
        "queries": int(final["reward_queries"]),
        "base": float(base["eval_reward_mean"]),
        "final": float(final["eval_reward_mean"]),
        "gain": float(final["eval_reward_mean"] - base["eval_reward_mean"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/grpo_embedded")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=None, help="also write the summary to this file")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides of the config")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("the seed std needs two seeds or more")
    seconds = {seed: train(args.out, seed, args.overrides) for seed in args.seeds}
    rows = [held_out(args.out, seed) for seed in args.seeds]
    table = pd.DataFrame(rows)
    gain, noise = statistics.mean(table["gain"]), statistics.stdev(table["final"])
    lines = [
        f"GRPO, {CONFIG.relative_to(ROOT)} {' '.join(args.overrides)}".rstrip(),
        "held-out aesthetic reward (5 objects x 4 samples, fixed noise, no exploration):",
        table.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        f"mean gain {gain:+.3f}; seed std of the final value {noise:.3f}; gain / std = {gain / noise:.1f} "
        f"(claim: >= 3) -> {'holds' if gain >= 3 * noise else 'FAILS'}",
        "wall time per run (s): " + ", ".join(f"seed {s} {t:.0f}" for s, t in seconds.items()),
    ]
    text = "\n".join(lines)
    print(text)
    if args.results:
        args.results.write_text(text + "\n")
    return 0 if gain >= 3 * noise else 1


if __name__ == "__main__":
    raise SystemExit(main())
