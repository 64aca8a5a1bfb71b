"""``diffexp report``: the sub-command, added to the main CLI with :func:`add_report_command`.

Heavy imports happen when the command runs, so ``diffexp --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_report_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="comparison report of a study (curves, paper tables, statistics, sample grids) as one HTML file",
        description="Read a study's runs from MLflow and write a self-contained index.html (figures and sample grids "
        "embedded), the figures as PNG and SVG and the tables as CSV and LaTeX. It opens with a verdict per cell: "
        "each strategy against the baseline on the evaluation-set reward, with 95%% intervals over seeds and the "
        "smallest "
        "difference this many seeds could detect.",
        epilog="example: diffexp report runs/my-study --out reports/my-study",
    )
    p.add_argument(
        "path", type=Path, nargs="?", help="study directory (holds mlflow.db) or a run directory (store in its parent)"
    )
    p.add_argument("--out", type=Path, help="output folder (default: reports/<name of path>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<path>/mlflow.db)")
    p.add_argument(
        "--experiment", action="append", dest="experiments", help="MLflow experiment to read (repeatable; default: all)"
    )
    p.add_argument(
        "--budgets",
        help="comma-separated reward-query budgets for the equal-budget table "
        "(default: 25%%, 50%%, 100%% of each panel's common budget)",
    )
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per interval")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    p.set_defaults(func=run_report_command)
    return p


def _parse_budgets(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"--budgets must be comma-separated numbers, got {text!r}") from err


def terminal_verdict(verdict) -> str:
    """The verdict's numbers without the sentences, to fit one screen."""
    from diffexp.reporting.verdict import display_table

    compact = display_table(verdict).drop(columns=["Verdict", "Queries to baseline's final"], errors="ignore")
    return compact.to_string(index=False)


def run_report_command(args: argparse.Namespace) -> int:
    from diffexp.reporting.report import build_report

    if args.path is None and not args.tracking_uri:
        raise ValueError("give a study or run directory, or --tracking-uri")
    result = build_report(
        args.path,
        out=args.out,
        tracking_uri=args.tracking_uri,
        experiments=args.experiments,
        budgets=_parse_budgets(args.budgets),
        reps=args.reps,
        seed=args.seed,
        command=["diffexp", *sys.argv[1:]],
    )
    print_result(result)
    return 0


def print_result(result) -> None:
    """The report's notes, where it went, and its verdict (one screen)."""
    for note in result.study.notes:
        print(f"note: {note}")
    print(
        f"wrote {result.html} ({len(result.study.runs)} runs, {len(result.figures)} figures, "
        f"{len(result.table_files)} table files)"
    )
    if result.sentences:
        print("\nVerdict (evaluation-set reward, 95% intervals over seeds):")
        for line in result.sentences:
            print(f"- {line}")
        print()
        print(terminal_verdict(result.verdict))
