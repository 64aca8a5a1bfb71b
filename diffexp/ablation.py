"""``diffexp ablation``: the main job. Runs the embedded ablation study, then writes its report.

The paper's four cells ({DDPO, AlignProp} x {aesthetic on single objects, alignment on
compositions}) x the four exploration strategies x seeds on the embedded world
(``experiments/ablations/embedded_ablation.yaml``), each cell exactly once; re-running resumes a
partly finished study. Profiles (the study file's ``profiles``): ``default`` (about 25 minutes on
2 cores), ``quick`` (a smoke test) and ``full`` (5 seeds, twice the budgets, four times DDPO x
alignment's). The default and full profiles' runs also rewrite the verdicts the README quotes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "experiments" / "ablations" / "embedded_ablation.yaml"
README = ROOT / "README.md"
#: the README's block that quotes the default profile's verdict, rewritten by every default run
README_START = "<!-- verdict: written by `make demo` from reports/embedded/verdict.md; do not edit by hand -->"
README_END = "<!-- end of verdict -->"
#: the profiles whose verdict the README quotes
QUOTED_PROFILES = ("default", "full")


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
    return Path("reports") / ("embedded" if profile == "default" else f"embedded-{profile}")


def readme_markers(profile: str = "default") -> tuple[str, str]:
    """The comments around the README's quote of a profile's verdict."""
    if profile == "default":
        return README_START, README_END
    source = f"{report_dir(profile).as_posix()}/verdict.md"
    return (
        f"<!-- {profile} verdict: written by `make demo PROFILE={profile}` from {source}; do not edit by hand -->",
        f"<!-- end of the {profile} verdict -->",
    )


def update_readme(readme: Path, verdict: str, profile: str = "default") -> bool:
    """Replace the README's block quoting ``profile``'s verdict with ``verdict``.
    Returns whether the file changed; a README without the block is left alone."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    opening, closing = readme_markers(profile)
    start, end = text.find(opening), text.find(closing)
    if start < 0 or end < start:
        return False
    new = text[: start + len(opening)] + "\n" + verdict + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


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
    if args.profile in QUOTED_PROFILES and args.out is None and args.study == DEFAULT_STUDY and status == 0:
        if update_readme(README, (Path(out) / "verdict.md").read_text(encoding="utf-8"), args.profile):
            print(f"updated the verdict quoted in {README.name}")
    total = time.perf_counter() - start
    print(
        f"\nprofile {args.profile}: study {swept / 60:.1f} min, with the report {total / 60:.1f} min"
        f" ({workers} worker(s), {ctx.total} runs); re-run the same command to resume an unfinished study"
    )
    return status
