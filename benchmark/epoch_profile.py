"""Samples per second and the time split (sampling, reward, update) of DDPO/AlignProp epochs.

Runs a short training from a run config and reads the per-epoch phase timings the modules log:

    python benchmark/epoch_profile.py diffexp/embedded/configs/ddpo.yaml --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pandas as pd

from diffexp.algorithms.config import load_config, parse_overrides
from diffexp.algorithms.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs timed (the first is reported separately as warm-up)"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, key=value")
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            args.config,
            {
                **overrides,
                "run.num_epochs": args.epochs + 1,
                "run.output_dir": tmp,
                "run.name": "profile",
                "run.loggers": ["csv"],
                "run.eval_every": 10_000,
            },
        )
        start = time.perf_counter()
        run(config, resume=False)
        wall = time.perf_counter() - start
        df = pd.read_csv(f"{tmp}/profile/csv/metrics.csv").iloc[1:]  # drop the warm-up epoch
    phases = [c for c in df.columns if c.startswith("time_")]
    per_epoch = {p: statistics.median(df[p]) for p in phases}
    total = sum(per_epoch.values())
    samples = config.batch_arithmetic()["samples_per_epoch"]
    print(
        f"{config.algorithm}: {samples} samples/epoch, median epoch {total:.2f} s -> {samples / total:.1f} samples/s "
        f"(whole run incl. load: {wall:.1f} s)"
    )
    for p, t in per_epoch.items():
        print(f"  {p[5:]:>9}: {t:6.2f} s  ({100 * t / total:4.1f}%)")


if __name__ == "__main__":
    main()
