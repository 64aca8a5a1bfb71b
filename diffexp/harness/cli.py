"""``diffexp sweep STUDY.yaml``: run an ablation grid or a hyper-parameter search.

``add_sweep_command(subparsers)`` adds the sub-command to ``diffexp``'s parser; standalone:
``python -m diffexp.harness.cli STUDY.yaml [...]``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

EPILOG = """\
examples:
  diffexp sweep experiments/ablations/tiny_grid.yaml --dry-run
  diffexp sweep experiments/ablations/tiny_grid.yaml --workers 2
  # more machines join a study by pointing at the same storage (and MLflow server):
  diffexp sweep diffexp/embedded/configs/embedded_ablation.yaml --workers 4 \\
      --storage postgresql+psycopg2://user:pw@db-host/diffexp --tracking-uri http://mlflow-host:5000
  diffexp sweep experiments/ablations/tiny_grid.yaml --status
dashboards (run directory runs/sweeps/<study> by default):
  mlflow ui --backend-store-uri sqlite:///runs/sweeps/<study>/mlflow.db -w 1 --host 127.0.0.1
  optuna-dashboard sqlite:///runs/sweeps/<study>/optuna.db --host 127.0.0.1
"""


def add_sweep_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sweep`` to a sub-command parser (``diffexp``'s); returns the new parser."""
    p = subparsers.add_parser(
        "sweep",
        help="run an ablation grid or a hyper-parameter search from a study file (Optuna + MLflow)",
        description=textwrap.fill(
            "Run the trials of a study file (experiments/ablations/*.yaml, experiments/searches/*.yaml): "
            "a grid (each cell exactly once) or a TPE/random search with pruning. Trials live in an Optuna storage "
            "(default: SQLite in the run directory), metrics in MLflow (one run per trial). Re-running the command "
            "resumes the study; workers on other machines join with the same --storage. See docs/SWEEPS.md.",
            88,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", type=Path, help="study YAML")
    p.add_argument(
        "--profile", help="one of the study file's `profiles` (e.g. quick, full); default: the file as written"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the study file and every trial's run config, print the trials, run nothing",
    )
    p.add_argument("--workers", type=int, help="worker processes on this machine (default: the study's `workers`, 1)")
    p.add_argument(
        "--threads-per-worker",
        type=int,
        help="torch CPU threads of each worker process (default: the cores shared equally among the workers; "
        "oversubscribed threads run several times slower)",
    )
    p.add_argument(
        "--storage", help="Optuna storage: SQLAlchemy URL or journal:<file> (default: sqlite:///<run dir>/optuna.db)"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<run dir>/mlflow.db)")
    p.add_argument(
        "--run-dir",
        type=Path,
        help="where trials, checkpoints and the default databases go "
        "(default: the study's run_dir or runs/sweeps/<name>)",
    )
    p.add_argument(
        "--status", action="store_true", help="print every trial's state and the study's progress, run nothing"
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="workers exit when no trial is queued, instead of waiting for running ones "
        "(that might die and need a retry)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show each training's own output (weight loading, progress bars, library warnings) on the console "
        "instead of in its trials/<key>/train.log",
    )
    p.set_defaults(func=run_sweep_command)
    return p


def run_sweep_command(args: argparse.Namespace) -> int:
    from diffexp.harness.context import resolve_context
    from diffexp.harness.launch import print_status, run_sweep

    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    if args.dry_run:
        return dry_run(args.study, args.run_dir, args.storage, args.tracking_uri, args.workers, profile=args.profile)
    if args.status:
        return print_status(
            resolve_context(
                args.study, args.run_dir, args.storage, args.tracking_uri, create=False, profile=args.profile
            )
        )
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise ValueError("--threads-per-worker must be at least 1")
    ctx = resolve_context(args.study, args.run_dir, args.storage, args.tracking_uri, profile=args.profile)
    return run_sweep(
        ctx,
        workers=args.workers or ctx.study.spec.workers,
        wait_for_running=not args.no_wait,
        threads_per_worker=args.threads_per_worker,
        verbose=args.verbose,
    )


def dry_run(
    study_path: Path, run_dir=None, storage=None, tracking_uri=None, workers=None, out=None, profile=None
) -> int:
    """Validate the study and each trial's run config (``load_config``); print the trials."""
    from diffexp.algorithms.run_identity import describe, queries_per_epoch
    from diffexp.harness.context import resolve_context
    from diffexp.harness.storage import redact

    out = out or sys.stdout
    ctx = resolve_context(study_path, run_dir, storage, tracking_uri, create=False, profile=profile)
    study, spec = ctx.study, ctx.study.spec

    def say(line=""):
        print(line, file=out)

    say(f"study {study.name}: {study.kind}, {ctx.total} trials, from {study.source}")
    say(f"run dir {ctx.run_dir}")
    say(
        f"storage {ctx.storage.display} | MLflow {redact(ctx.tracking_uri)} | workers {workers or spec.workers}"
        f" | heartbeat {spec.heartbeat_interval}s, grace {spec.effective_grace_period}s, max retry {spec.max_retry}"
    )
    obj = spec.objective
    say(f"objective: {obj.direction} {obj.metric} (intermediate: {obj.intermediate} against reward queries)")
    if study.kind == "grid":
        space = study.grid_search_space()
        say("grid: " + " x ".join(f"{axis} ({len(v)})" for axis, v in space.items()))
    else:
        s = spec.search
        say(f"search: {s.sampler} sampler (seed {s.seed}), {s.n_trials} trials, pruner {s.pruner.kind}")
        for key, p in s.space.items():
            rng = (
                f"choices {p.choices}"
                if p.type == "categorical"
                else f"[{p.low}, {p.high}]" + (f" step {p.step}" if p.step else "") + (" log" if p.log else "")
            )
            when = f" when {p.when}" if p.when else ""
            say(f"  {key}: {p.type} {rng}{when}")
    trials = study.trials_for_validation()
    header = (
        f"{'trial':<34} {'algorithm':<9} {'strategy':<8} {'seed':>4} {'reward':<20} {'prompt set':<22} "
        f"{'hash':<12} {'epochs':>6} {'queries':>8}"
    )
    if study.kind == "search":
        say(
            f"validating {len(trials)} example points of the space (corners of each categorical combination, random "
            "draws):"
        )
    say(header)
    for t in trials:
        config = study.build_config(t, {"run.output_dir": str(ctx.run_dir / "trials"), "run.name": t.key})
        d = describe(config)
        total = queries_per_epoch(config) * config.run.num_epochs
        say(
            f"{t.key[:34]:<34} {d['algorithm']:<9} {d['strategy']:<8} {d['seed']:>4} {d['reward'][:20]:<20} "
            f"{d['prompt_set'][:22]:<22} {d['config_hash']:<12} {config.run.num_epochs:>6} {total:>8}"
        )
        if study.kind == "search":
            say(f"    {t.label()}")
    study.check_objective()
    say(f"ok: {len(trials)} trial config(s) valid; the objective metrics are logged by every trial")
    return 0


def sweep_main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m diffexp.harness.cli``), same as ``diffexp sweep``."""
    parser = argparse.ArgumentParser(prog="diffexp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_command(sub)
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"diffexp sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(sweep_main())
