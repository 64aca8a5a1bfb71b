"""Claiming, duplicates, dead-worker detection and search budgets, without training."""

import os
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from diffexp.algorithms.run_record import HEARTBEAT_ATTR, IGNORED_ATTR, KEY_ATTR
from diffexp.harness.context import resolve_context, setup_study
from diffexp.harness.heartbeat import Heartbeat
from diffexp.harness.progress import study_progress
from diffexp.harness.worker import Worker
from tests.helpers import NAMED

TINY_GRID = Path(__file__).resolve().parents[2] / "experiments" / "ablations" / "tiny_grid.yaml"
SEARCH = {
    "sampler": "tpe",
    "n_trials": 4,
    "seed": 0,
    "n_startup_trials": 1,
    "space": {
        "exploration.cfg.low": {"type": "float_range", "low": 0.5, "high": 4.0},
        "exploration.phrase.num_phrases": {"type": "int", "low": 1, "high": 3},
    },
}


def context(tmp_path, storage=None, **changes):
    data = yaml.safe_load(TINY_GRID.read_text())
    data.update(changes)
    if "search" in changes:
        del data["grid"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return resolve_context(path, tmp_path / "run", storage)


@pytest.fixture(params=["sqlite", "journal"])
def ctx(request, tmp_path):
    storage = f"journal:{tmp_path}/run/optuna.journal" if request.param == "journal" else None
    return context(tmp_path, storage, heartbeat_interval=1, grace_period=2)


def test_setup_queues_each_cell_once_and_is_idempotent(ctx):
    study = setup_study(ctx, log=lambda *_: None)
    setup_study(ctx, log=lambda *_: None)  # a second launcher
    waiting = study.get_trials(states=(TrialState.WAITING,))
    keys = [t.user_attrs[KEY_ATTR] for t in waiting]
    assert sorted(keys) == sorted(c.key for c in ctx.study.cells())
    assert study_progress(study, ctx.total, ctx.keys()).line() == "done 0/4, running 0, failed 0, remaining 4"


def test_two_workers_never_run_one_cell_twice(ctx):
    study = setup_study(ctx, log=lambda *_: None)
    first = ctx.study.cells()[0]
    study.enqueue_trial(first.params, user_attrs={KEY_ATTR: first.key})  # as if two launchers raced
    a, b = Worker(ctx, "a"), Worker(ctx, "b")
    claimed = [a.claim_waiting(), b.claim_waiting(), a.claim_waiting(), b.claim_waiting()]
    numbers = [t.number for t in claimed]
    assert numbers == [0, 1, 2, 3]  # the duplicate (#4) waits behind #0
    assert b.claim_waiting() is None  # #4 may not run while #0 runs
    for t in claimed:
        study.tell(t, 1.0)
    assert a.claim_waiting() is None  # #4 is closed as a duplicate of the finished cell
    dup = study.trials[4]
    assert dup.state == TrialState.FAIL and "duplicate" in dup.system_attrs[IGNORED_ATTR]
    assert not a.pending()
    assert study_progress(study, ctx.total, ctx.keys()).line() == "done 4/4, running 0, failed 0, remaining 0"


def test_claimed_duplicate_is_closed_when_a_lower_trial_runs(ctx):
    study = setup_study(ctx, log=lambda *_: None)
    first = ctx.study.cells()[0]
    study.enqueue_trial(first.params, user_attrs={KEY_ATTR: first.key})
    w = Worker(ctx, "w")
    # both copies got claimed (the race step 3 of the docstring guards against)
    assert w.storage.set_trial_state_values(study.trials[0]._trial_id, TrialState.RUNNING)
    assert (
        w._duplicate_reason(study.trials[4]._trial_id, 4, first.key)
        == f"duplicate: {first.key} is being run by trial #0"
    )
    assert w._duplicate_reason(study.trials[0]._trial_id, 0, first.key) is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_dead_worker_trial_is_failed_and_requeued(tmp_path, kind):
    storage = f"journal:{tmp_path}/run/optuna.journal" if kind == "journal" else None
    ctx = context(tmp_path, storage, heartbeat_interval=1, grace_period=600)
    study = setup_study(ctx, log=lambda *_: None)
    dead = Worker(ctx, "dead")
    trial = dead.claim_waiting()
    Heartbeat(dead.raw_storage, trial._trial_id, 1, dead.journal).beat()  # then the worker "dies"
    Worker(ctx, "patient").reap_stale()
    assert study.trials[trial.number].state == TrialState.RUNNING  # within its grace period
    time.sleep(3.5)
    alive = Worker(context(tmp_path, storage, heartbeat_interval=1, grace_period=2), "alive")
    alive.reap_stale()
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == trial.number
    assert retry.user_attrs[KEY_ATTR] == trial.user_attrs[KEY_ATTR] and retry.params == trial.params
    alive.reap_stale()  # a second reaper does not queue a second retry
    assert len(study.get_trials()) == len(trials)
    # the retry is now its cell's lowest unfinished trial, so a worker takes it
    claims = [alive.claim_waiting() for _ in range(4)]
    assert retry.number in [t.number for t in claims]


def test_heartbeat_notices_a_lost_trial(ctx):
    setup_study(ctx, log=lambda *_: None)
    w = Worker(ctx, "w")
    trial = w.claim_waiting()
    hb = Heartbeat(w.raw_storage, trial._trial_id, 1, w.journal)
    hb.beat()
    assert not hb.lost
    w.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # declared dead by someone else
    hb.beat()
    assert hb.lost
    if w.journal:
        assert HEARTBEAT_ATTR in w.storage.get_trial(trial._trial_id).system_attrs


def test_search_budget_is_exact_with_concurrent_workers(tmp_path):
    ctx = context(tmp_path, None, search={**SEARCH, "n_trials": 3})
    setup_study(ctx, log=lambda *_: None)
    a, b = Worker(ctx, "a"), Worker(ctx, "b")
    asked = [a.ask_new(), b.ask_new(), a.ask_new()]
    assert [t.number for t in asked] == [0, 1, 2]
    assert b.ask_new() is None and a.ask_new() is None
    assert [t.user_attrs[KEY_ATTR] for t in a.study.get_trials()] == ["t0000", "t0001", "t0002"]


def test_a_failing_trial_is_recorded_and_requeued_on_relaunch(tmp_path, monkeypatch):
    import diffexp.algorithms.runner as runner

    def boom(config, **kwargs):
        raise RuntimeError(f"boom in {config.run.name}")

    monkeypatch.setattr(runner, "run", boom)
    ctx = context(tmp_path)
    study = setup_study(ctx, log=lambda *_: None)
    w = Worker(ctx, "w")
    assert w.run(max_trials=1) == 1
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and "RuntimeError: boom in" in failed.user_attrs["diffexp:error"]
    assert "failed_trial" not in study.trials[-1].system_attrs  # an error is not retried automatically
    assert study_progress(study, ctx.total, ctx.keys()).line() == "done 0/4, running 0, failed 1, remaining 3"
    run = w.tracker.client.get_run(failed.user_attrs["diffexp:mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    messages = []
    setup_study(ctx, log=messages.append)  # launching the sweep again re-queues the failed cell
    assert messages == ["queued 0 cell(s), re-queued 1 failed cell(s)"]
    assert study.trials[-1].user_attrs[KEY_ATTR] == failed.user_attrs[KEY_ATTR]


def test_interrupt_requeues_the_trial(tmp_path, monkeypatch):
    import diffexp.algorithms.runner as runner

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    ctx = context(tmp_path)
    study = setup_study(ctx, log=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        Worker(ctx, "w").run()
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].system_attrs["failed_trial"] == 0


def test_a_finished_result_is_not_retrained(tmp_path, monkeypatch):
    import json

    import diffexp.algorithms.runner as runner
    from diffexp.algorithms.run_identity import config_hash

    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("retrained"))
    ctx = context(tmp_path)
    study = setup_study(ctx, log=lambda *_: None)
    cell = ctx.study.cells()[0]
    trial_dir = ctx.run_dir / "trials" / cell.key
    trial_dir.mkdir(parents=True)
    (trial_dir / "result.json").write_text(
        json.dumps({"value": 0.25, "config_hash": config_hash(ctx.study.build_config(cell))})
    )
    Worker(ctx, "w").run(max_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.25


def test_simultaneous_mlflow_runs_of_one_cell_collapse_to_the_earliest(tmp_path, monkeypatch):
    """A worker declared dead may start its MLflow run at the same moment as the retry: both look,
    find none and create one; the later one is deleted and both log into the earliest."""
    from diffexp.algorithms.mlflow_run import Tracker

    ctx = context(tmp_path)
    tracker = Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir)
    cell = ctx.study.cells()[0]
    config = ctx.study.build_config(cell)
    first = tracker.start_trial(cell.key, {"worker": "w0"}, cell.params, config)
    real_find = tracker.find_run
    calls = []

    def racing_find(key):  # the second worker's first look happens before the first run exists
        calls.append(key)
        return None if len(calls) == 1 else real_find(key)

    monkeypatch.setattr(tracker, "find_run", racing_find)
    second = tracker.start_trial(cell.key, {"worker": "w1"}, cell.params, config)
    assert second == first
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.run_id for r in runs] == [first]  # the duplicate was deleted


@pytest.mark.slow
def test_finished_cells_of_a_changed_config_are_refused(tmp_path):
    """A finished cell whose run config hashes differently now (a base config, a default or the
    shipped embedded weights changed) stops the sweep with an error naming the cell."""
    from diffexp.algorithms.run_identity import describe
    from diffexp.harness.context import trial_config
    from diffexp.harness.study_file import StudyError

    ctx = context(tmp_path)
    study = setup_study(ctx, log=lambda *_: None)
    w = Worker(ctx, "w")
    cells = {c.key: c for c in ctx.study.cells()}
    for recorded in ("current", "stale"):
        trial = w.claim_waiting()
        key = trial.user_attrs[KEY_ATTR]
        current = describe(trial_config(ctx, cells[key], key))["config_hash"]
        trial.set_user_attr("diffexp:config_hash", current if recorded == "current" else "0" * 12)
        study.tell(trial, 1.0)
        if recorded == "current":
            setup_study(ctx, log=lambda *_: None)  # a finished cell of this config: fine
    with pytest.raises(StudyError, match=rf"1 finished cell\(s\) whose run config has changed.*{key}"):
        setup_study(ctx, log=lambda *_: None)


def test_config_hash_follows_the_shipped_embedded_weights(monkeypatch):
    import diffexp.embedded as world
    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.run_identity import config_hash
    from diffexp.plugins import FINGERPRINTS, load_plugins

    embedded = load_config(None, {**NAMED, "model.pretrained": "embedded", "reward.name": "embedded_alignment"})
    twin = load_config(None, NAMED)
    before = config_hash(embedded), config_hash(twin)
    load_plugins()
    shipped = [name for name, f in FINGERPRINTS.items() if f is world.weights_fingerprint]
    assert {"embedded", "embedded_alignment", "embedded_aesthetic"} <= set(shipped)  # the world registered them
    for name in shipped:  # as if the world's weights were retrained
        monkeypatch.setitem(FINGERPRINTS, name, lambda: "retrained000")
    assert config_hash(embedded) != before[0]
    assert config_hash(twin) == before[1]  # runs that do not use the embedded world keep their hash


@pytest.mark.slow
def test_concurrent_claims_take_distinct_trials(tmp_path):
    """Workers claiming at the same instant on one SQLite file each get a trial of their own.

    SQLite ignores Optuna's SELECT ... FOR UPDATE, so without the harness's claim lock two workers
    can both read a trial as WAITING and both move it to RUNNING."""
    import threading

    rounds, workers = 3, 4
    for r in range(rounds):
        (tmp_path / f"round{r}").mkdir()
        ctx = context(tmp_path / f"round{r}", None, heartbeat_interval=1, grace_period=2)
        setup_study(ctx, log=lambda *_: None)
        pool = [Worker(ctx, f"w{i}") for i in range(workers)]
        barrier, claimed = threading.Barrier(workers), [None] * workers

        def claim(i, barrier=barrier, claimed=claimed, pool=pool):
            barrier.wait()
            claimed[i] = pool[i].claim_waiting()

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        numbers = sorted(t.number for t in claimed if t is not None)
        assert numbers == list(range(workers)), f"round {r}: claims {numbers}"


def test_sweep_workers_get_an_equal_share_of_the_cores():
    from diffexp.harness.launch import _subprocess_env, share_of_cores

    assert share_of_cores(2, cores=2) == 1 and share_of_cores(3, cores=16) == 5 and share_of_cores(4, cores=2) == 1
    env = _subprocess_env(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"
    assert _subprocess_env(None).get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")  # left as it was


def test_sweep_command_takes_threads_per_worker():
    import argparse

    from diffexp.harness.cli import add_sweep_command

    parser = argparse.ArgumentParser()
    add_sweep_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "s.yaml", "--workers", "2", "--threads-per-worker", "3"])
    assert args.workers == 2 and args.threads_per_worker == 3


def test_the_eta_counts_the_workers_at_work():
    """Two workers, runs of 100 s: as one finishes (the other still running), 4 runs remain:
    about (4 + 0.5) x 100 / 2 s, not twice that."""
    import datetime as dt
    from types import SimpleNamespace

    from diffexp.harness.progress import Progress, recent_workers

    now = dt.datetime(2026, 1, 1, 12)

    def trial(state, worker, start=None, end=None):
        return SimpleNamespace(
            state=SimpleNamespace(name=state),
            user_attrs={"diffexp:worker": worker},
            datetime_start=start,
            datetime_complete=end,
        )

    groups = {
        "a": [trial("COMPLETE", "w0", now - dt.timedelta(seconds=200), now - dt.timedelta(seconds=100))],
        "b": [trial("COMPLETE", "w1", now - dt.timedelta(seconds=150), now - dt.timedelta(seconds=50))],
        "c": [trial("COMPLETE", "w0", now - dt.timedelta(seconds=100), now)],
    }
    assert recent_workers(groups, 100.0) == 2
    p = Progress(total=8, done=3, running=1, seconds_per_run=100.0, workers=2)
    assert p.eta_seconds() == pytest.approx((4 + 0.5) * 100 / 2)
    assert "about 4 min left" in p.line()
