"""Study progress: done / running / failed / remaining, counted per trial key.

A trial key is a grid cell (or, for searches, an original trial and its retries), so a cell
whose worker died and that was re-run counts once. Trials the harness closed as duplicates or
as over the search budget are not counted.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from diffexp.algorithms.run_record import IGNORED_ATTR, KEY_ATTR, WORKER_ATTR


def trial_key_of(trial) -> str:
    key = trial.user_attrs.get(KEY_ATTR)
    if key:
        return key
    origin = trial.system_attrs.get("failed_trial", trial.number)
    return f"t{origin:04d}"


def ignored(trial) -> bool:
    return bool(trial.system_attrs.get(IGNORED_ATTR) or trial.user_attrs.get(IGNORED_ATTR))


def group_trials(trials) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for t in trials:
        if not ignored(t):
            groups[trial_key_of(t)].append(t)
    return dict(groups)


def key_state(trials) -> str:
    """One key's state: done (a COMPLETE or PRUNED trial), running, waiting, or failed."""
    from optuna.trial import TrialState

    states = {t.state for t in trials}
    if TrialState.COMPLETE in states:
        return "done"
    if TrialState.PRUNED in states:
        return "pruned"
    if TrialState.RUNNING in states:
        return "running"
    if TrialState.WAITING in states:
        return "waiting"
    return "failed"


@dataclass
class Progress:
    total: int
    done: int = 0
    pruned: int = 0
    running: int = 0
    failed: int = 0
    waiting: int = 0
    #: the keys of the running trials, and the mean wall time of the finished ones (seconds)
    running_keys: tuple[str, ...] = ()
    seconds_per_run: float | None = None
    #: workers seen at work lately (running a trial, or finishing one within a mean run's time)
    workers: int = 1

    @property
    def remaining(self) -> int:
        """Not yet started (queued, or not created yet)."""
        return max(0, self.total - self.done - self.pruned - self.running - self.failed)

    @property
    def finished(self) -> bool:
        return self.running == 0 and self.remaining == 0

    def eta_seconds(self) -> float | None:
        """Time to the end at the finished runs' mean duration, the running ones half done, with as
        many in parallel as run now."""
        if self.seconds_per_run is None or self.finished:
            return None if not self.finished else 0.0
        parallel = max(1, self.running, self.workers)
        return self.seconds_per_run * (self.remaining + 0.5 * self.running) / parallel

    def line(self) -> str:
        pruned = f" (+{self.pruned} pruned)" if self.pruned else ""
        eta = self.eta_seconds()
        return (
            f"done {self.done}{pruned}/{self.total}, running {self.running}, "
            f"failed {self.failed}, remaining {self.remaining}"
            + (f", about {format_duration(eta)} left" if eta else "")
        )


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def study_progress(study, total: int, keys: list[str] | None = None) -> Progress:
    """Progress over ``total`` trial keys (grid: the cells' keys; search: n_trials)."""
    groups = group_trials(study.get_trials(deepcopy=False))
    if keys is not None:
        groups = {k: v for k, v in groups.items() if k in set(keys)}
    p = Progress(total=total)
    durations, running = [], []
    for key, trials in groups.items():
        state = key_state(trials)
        durations += [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in trials
            if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete
        ]
        if state == "running":
            running.append(key)
        if state == "done":
            p.done += 1
        elif state == "pruned":
            p.pruned += 1
        elif state == "running":
            p.running += 1
        elif state == "waiting":
            p.waiting += 1
        else:
            p.failed += 1
    p.running_keys = tuple(sorted(running))
    p.seconds_per_run = sum(durations) / len(durations) if durations else None
    p.workers = recent_workers(groups, p.seconds_per_run)
    return p


def recent_workers(groups: dict[str, list], window: float | None) -> int:
    """How many workers ran a trial lately: running now, or finished within ``window`` seconds of the
    latest finish (the ETA's parallelism: at the moment one finishes, the others still run)."""
    trials = [t for ts in groups.values() for t in ts]
    done = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    names = {t.user_attrs.get(WORKER_ATTR) for t in trials if t.state.name == "RUNNING"}
    if done and window:
        latest = max(done)
        names |= {
            t.user_attrs.get(WORKER_ATTR)
            for t in trials
            if t.datetime_complete is not None and (latest - t.datetime_complete).total_seconds() <= window
        }
    names.discard(None)
    return max(1, len(names))


def status_table(study, keys: list[str] | None = None) -> str:
    """One line per trial key: state, attempts, value, run dir."""
    groups = group_trials(study.get_trials(deepcopy=False))
    order = keys if keys is not None else sorted(groups, key=lambda k: min(t.number for t in groups[k]))
    lines = [f"{'trial key':<44} {'state':<8} {'tries':>5} {'value':>12}  trials"]
    for key in order:
        trials = groups.get(key, [])
        state = key_state(trials) if trials else "queued"
        value = next((t.value for t in trials if t.value is not None), None)
        value_text = f"{value:.6g}" if value is not None else "-"
        numbers = ",".join(f"#{t.number}:{t.state.name.lower()}" for t in sorted(trials, key=lambda t: t.number))
        lines.append(f"{key:<44} {state:<8} {len(trials):>5} {value_text:>12}  {numbers}")
    return "\n".join(lines)


def wait_with_display(name: str, progress: Callable[[], Progress], procs: list, live: bool, every: float = 2.0):
    """Wait for the worker processes (their exit codes); on a terminal, keep one line up to date
    with the study's progress, the running trials and the time left."""
    while any(p.poll() is None for p in procs):
        if live:
            now = progress()
            running = ", ".join(now.running_keys)
            line = f"study {name}: {now.line()}" + (f" | running: {running}" if running else "")
            width = shutil.get_terminal_size((160, 20)).columns
            print("\r\033[K" + line[: width - 1], end="", flush=True)
        time.sleep(every)
    if live:
        print("\r\033[K", end="", flush=True)
    return [p.wait() for p in procs]
