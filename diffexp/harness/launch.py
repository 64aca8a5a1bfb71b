"""Launching a study: set it up, start its worker processes (each with its share of the cores),
wait for them, and report; ``diffexp sweep --status`` reads a study's state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from diffexp.algorithms.run_record import MLFLOW_RUN_ID_ATTR, RUN_DIR_ATTR
from diffexp.harness.context import SweepContext, exit_on_sigterm, quiet_optuna, setup_study
from diffexp.harness.progress import (
    status_table,
    study_progress,
    trial_key_of,
    wait_with_display,
)
from diffexp.harness.storage import open_storage, redact
from diffexp.harness.worker import Worker


def best_trial_line(study, direction: str) -> str | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None
    best = max(done, key=lambda t: t.value) if direction == "maximize" else min(done, key=lambda t: t.value)
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    return (
        f"best trial #{best.number} ({trial_key_of(best)}): value {best.value:.6g}; {params}; "
        f"run dir {best.user_attrs.get(RUN_DIR_ATTR)}; MLflow run {best.user_attrs.get(MLFLOW_RUN_ID_ATTR)}"
    )


def worker_command(ctx: SweepContext, name: str, verbose: bool = False) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "diffexp.harness.worker",
        str(ctx.study.path.resolve()),
        "--run-dir",
        str(ctx.run_dir),
        "--storage",
        ctx.storage.url,
        "--tracking-uri",
        ctx.tracking_uri,
        "--name",
        name,
    ]
    command += ["--profile", ctx.study.profile] if ctx.study.profile else []
    return command + (["--verbose"] if verbose else [])


def share_of_cores(workers: int, cores: int | None = None) -> int:
    """Each worker's equal share of the cores (at least one)."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def _subprocess_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:  # torch takes its intra-op thread count from OMP_NUM_THREADS
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_sweep(
    ctx: SweepContext,
    workers: int = 1,
    log=print,
    wait_for_running: bool = True,
    threads_per_worker: int | None = None,
    verbose: bool = False,
) -> int:
    """Set the study up, run ``workers`` workers on this machine (subprocesses when > 1, each with
    ``threads_per_worker`` torch threads, default an equal share of the cores), print the study's
    progress and best trial. Returns 0 when every trial is done, 1 otherwise."""
    threads = threads_per_worker or (share_of_cores(workers) if workers > 1 else None)
    log(f"study {ctx.study.name} ({ctx.study.kind}, {ctx.total} trials) | run dir {ctx.run_dir}")
    log(
        f"storage {ctx.storage.display} | MLflow {redact(ctx.tracking_uri)} | {workers} worker(s)"
        + (f", {threads} thread(s) each" if threads else "")
    )
    if ctx.storage.path is None and ctx.tracking_uri.startswith("sqlite:"):
        log(
            "note: the study is shared but MLflow tracking is local to this machine; pass --tracking-uri "
            "(an MLflow server) so that every machine's runs land in one experiment"
        )
    study = setup_study(ctx, log=log)
    if workers == 1:
        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
        except ValueError:  # not the main thread
            previous = None
        try:
            Worker(ctx, name="w0", wait_for_running=wait_for_running, capture=not verbose).run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    else:
        if ctx.study.path is None:
            raise ValueError("several workers need a study file (they re-read it)")
        env = _subprocess_env(threads)
        procs = [subprocess.Popen(worker_command(ctx, f"w{i}", verbose), env=env) for i in range(workers)]

        def forward(signum, frame):
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            codes = wait_with_display(
                ctx.study.name,
                lambda: study_progress(study, ctx.total, ctx.keys()),
                procs,
                live=not verbose and sys.stdout.isatty(),
            )
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        for i, code in enumerate(codes):
            if code:
                log(f"worker w{i} exited with status {code}")
    progress = study_progress(study, ctx.total, ctx.keys())
    log(f"study {ctx.study.name}: {progress.line()}")
    best = best_trial_line(study, ctx.study.spec.objective.direction)
    if best:
        log(best)
    return 0 if progress.failed == 0 and progress.finished else 1


def print_status(ctx: SweepContext, log=print) -> int:
    import optuna

    quiet_optuna()
    missing = ValueError(
        f"no study {ctx.study.name!r} in {ctx.storage.display} yet: run `diffexp sweep {ctx.study.source}` first"
    )
    if ctx.storage.path is not None and not ctx.storage.path.exists():
        raise missing
    storage = open_storage(ctx.storage, ctx.study.spec.heartbeat_interval, ctx.study.spec.effective_grace_period)
    try:
        study = optuna.load_study(study_name=ctx.study.name, storage=storage)
    except KeyError:
        raise missing from None
    log(status_table(study, ctx.keys()))
    log(f"study {ctx.study.name}: {study_progress(study, ctx.total, ctx.keys()).line()}")
    best = best_trial_line(study, ctx.study.spec.objective.direction)
    if best:
        log(best)
    return 0
