"""``diffexp ablation``: the main job. Runs the embedded ablation study, then writes its report.

The paper's four cells ({DDPO, AlignProp} x {aesthetic on single objects, alignment on
compositions}) x the four exploration strategies x seeds on the embedded world
(``diffexp/embedded/configs/embedded_ablation.yaml``, shipped with the package), each cell exactly
once; re-running resumes a partly finished study. Profiles (the study file's ``profiles``):
``default`` (about 20 minutes on 2 cores), ``quick`` (a smoke test) and ``full`` (5 seeds, twice the
budgets, four times DDPO x alignment's). ``make demo`` then quotes the verdict in the README
(``reports/quote_verdict.py``); the library writes only the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: the main job's study file, package data beside the run configs it names
DEFAULT_STUDY = Path(__file__).resolve().parent / "configs" / "embedded_ablation.yaml"


def add_ablation_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablation",
        help="the main job: the embedded ablation study ({DDPO, AlignProp} x 2 tasks x 4 strategies x seeds) "
        "and its report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", default="default", help="default | quick | full (the study file's profiles)")
    p.add_argument("--study", type=Path, default=DEFAULT_STUDY, help="study file (default: the embedded ablation)")
    p.add_argument("--workers", type=int, help="worker processes (default: the profile's; one per core)")
    p.add_argument("--run-dir", type=Path, help="where trials and databases go (default runs/sweeps/<study name>)")
    p.add_argument("--out", type=Path, help="report folder (default reports/embedded, reports/embedded-<profile>)")
    p.add_argument(
        "--verbose", action="store_true", help="each run's own output on the console (default: trials/<key>/train.log)"
    )
    p.set_defaults(func=run_ablation_command)
    return p


def report_dir(profile: str) -> Path:
    """Where a profile's report goes by default (relative to the working directory)."""
    return Path("reports") / ("embedded" if profile == "default" else f"embedded-{profile}")


def run_ablation_command(args: argparse.Namespace) -> int:
    from diffexp.harness.context import resolve_context
    from diffexp.harness.launch import run_sweep
    from diffexp.reporting.cli import print_result
    from diffexp.reporting.report import build_report

    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    start = time.perf_counter()
    ctx = resolve_context(args.study, args.run_dir, profile=args.profile)
    workers = args.workers or ctx.study.spec.workers
    status = run_sweep(ctx, workers=workers, verbose=args.verbose)  # each worker gets an equal share of the cores
    swept = time.perf_counter() - start
    out = args.out or report_dir(args.profile)
    result = build_report(ctx.run_dir, out=out, command=["diffexp", *sys.argv[1:]])
    print()
    print_result(result)
    total = time.perf_counter() - start
    print(
        f"\nprofile {args.profile}: study {swept / 60:.1f} min, with the report {total / 60:.1f} min"
        f" ({workers} worker(s), {ctx.total} runs); re-run the same command to resume an unfinished study"
    )
    return status
