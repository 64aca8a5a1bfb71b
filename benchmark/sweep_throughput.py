"""Throughput of a sweep with one and with two workers on this machine (threads per worker).

Runs one fixed grid (embedded DDPO, the 4 strategies x ``--seeds`` seeds, ``--epochs`` epochs of 16
samples each) from a fresh run directory per setting and prints each wall time and the speed-up
over one worker:

    python benchmark/sweep_throughput.py [--repeats 1] [--settings one,two] [--seeds 4] [--epochs 6]

Each worker process pays ~10 s of start-up (imports, the study), so the grid is sized for the
training to dominate, as it does in a real sweep; on 2 cores the best two workers can do is ~1.4x
(two 1-thread trials at once each run ~1.4x slower than one 2-thread trial alone).

``two`` is the default of ``diffexp sweep --workers 2`` (each worker an equal share of the cores);
``two-oversubscribed`` gives each worker every core (torch's default without the share), for the
comparison. Results are printed, and with ``--out`` appended to a text file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    "name": "throughput",
    "base": str(ROOT / "diffexp" / "embedded" / "configs" / "ddpo.yaml"),
    "overrides": {
        "sample.num_steps": 10,
        "sample.batch_size": 16,
        "sample.num_batches_per_epoch": 1,
        "sample.samples_per_prompt": 4,
        "train.batch_size": 8,
        "train.stat_tracking.min_count": 2,
        "run.num_epochs": 6,
        "run.eval_every": 100,
        "run.eval_at_start": False,
        "run.eval_num_prompts": 2,
        "run.loggers": ["csv"],
    },
    "grid": {"exploration.strategy": ["baseline", "cfg", "phrase", "diffexp"], "run.seed": [0, 1, 2, 3]},
    "objective": {"metric": "reward_mean", "direction": "maximize"},
}
SETTINGS = {"one": (1, None), "two": (2, None), "two-oversubscribed": (2, os.cpu_count() or 1)}


def time_sweep(workers: int, threads: int | None, folder: Path, seeds: int, epochs: int) -> float:
    study = folder / "study.yaml"
    spec = {**STUDY, "grid": {**STUDY["grid"], "run.seed": list(range(seeds))}}
    spec["overrides"] = {**STUDY["overrides"], "run.num_epochs": epochs}
    study.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "diffexp", "sweep", str(study), "--run-dir", str(folder / "run")]
    command += ["--workers", str(workers)] + (["--threads-per-worker", str(threads)] if threads else [])
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="timed sweeps per setting (the median is quoted)")
    parser.add_argument("--settings", default="one,two", help=f"comma list of {sorted(SETTINGS)}")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per strategy (the grid has 4 x seeds trials)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (16 reward queries each)")
    parser.add_argument("--out", type=Path, help="append the result lines to this file")
    args = parser.parse_args()
    times = {}
    for name in args.settings.split(","):
        workers, threads = SETTINGS[name]
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(time_sweep(workers, threads, Path(tmp), args.seeds, args.epochs))
        times[name] = statistics.median(runs)
        print(f"{name:>20}: {times[name]:7.1f} s  ({', '.join(f'{t:.1f}' for t in runs)})", flush=True)
    lines = [
        f"sweep of {4 * args.seeds} trials x {args.epochs} epochs on {os.cpu_count()} cores, median of {args.repeats}:"
    ]
    lines += [f"  {name}: {t:.1f} s" for name, t in times.items()]
    if "one" in times:
        lines += [f"  speed-up of {name} over one worker: {times['one'] / t:.2f}x" for name, t in times.items()]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write(time.strftime("%Y-%m-%d") + " " + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
