"""``diffexp ablation``: the main job. Runs the embedded ablation study, then writes its report.

DDPO and AlignProp x the four exploration strategies x seeds on the embedded world
(``experiments/ablations/embedded_ablation.yaml``), each cell exactly once; re-running resumes a
partly finished study. Profiles (the study file's ``profiles``): ``default`` (about 15 minutes on
2 cores), ``quick`` (a smoke test) and ``full`` (more seeds and budget).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_STUDY = Path(__file__).resolve().parents[1] / "experiments" / "ablations" / "embedded_ablation.yaml"


def add_ablation_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablation",
        help="the main job: the embedded ablation study (DDPO, AlignProp x 4 strategies x seeds) and its report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", default="default", help="default | quick | full (the study file's profiles)")
    p.add_argument("--study", type=Path, default=DEFAULT_STUDY, help="study file (default: the embedded ablation)")
    p.add_argument("--workers", type=int, help="worker processes (default: the profile's; one per core)")
    p.add_argument("--run-dir", type=Path, help="where trials and databases go (default runs/sweeps/<study name>)")
    p.add_argument("--out", type=Path, help="report folder (default reports/embedded, reports/embedded-<profile>)")
    p.set_defaults(func=run_ablation_command)
    return p


def report_dir(profile: str) -> Path:
    return Path("reports") / ("embedded" if profile == "default" else f"embedded-{profile}")


def run_ablation_command(args: argparse.Namespace) -> int:
    from benchmark.harness.worker import resolve_context, run_sweep
    from benchmark.reporting.cli import print_result
    from benchmark.reporting.report import build_report

    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    start = time.perf_counter()
    ctx = resolve_context(args.study, args.run_dir, profile=args.profile)
    workers = args.workers or ctx.study.spec.workers
    # Each worker gets an equal share of the cores: oversubscribed threads are slower than idle ones.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    status = run_sweep(ctx, workers=workers)
    swept = time.perf_counter() - start
    out = args.out or report_dir(args.profile)
    result = build_report(ctx.run_dir, out=out, command=["diffexp", *sys.argv[1:]])
    print()
    print_result(result)
    total = time.perf_counter() - start
    print(f"\nprofile {args.profile}: study {swept / 60:.1f} min, with the report {total / 60:.1f} min"
          f" ({workers} worker(s), {ctx.total} runs); re-run the same command to resume an unfinished study")
    return status
