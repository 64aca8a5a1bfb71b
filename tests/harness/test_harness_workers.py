"""Claiming, duplicates, dead-worker detection and search budgets, without training."""

import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchmark.harness.progress import IGNORED_ATTR, KEY_ATTR, study_progress
from benchmark.harness.worker import HEARTBEAT_ATTR, Heartbeat, Worker, resolve_context, setup_study

from .test_harness_study import SEARCH, TINY_GRID


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
    assert w._duplicate_reason(study.trials[4]._trial_id, 4, first.key) == f"duplicate: {first.key} is being run by trial #0"
    assert w._duplicate_reason(study.trials[0]._trial_id, 0, first.key) is None


def test_dead_worker_trial_is_failed_and_requeued(ctx):
    study = setup_study(ctx, log=lambda *_: None)
    dead, alive = Worker(ctx, "dead"), Worker(ctx, "alive")
    trial = dead.claim_waiting()
    Heartbeat(dead.raw_storage, trial._trial_id, 1, dead.journal).beat()  # then the worker "dies"
    alive.reap_stale()
    assert study.trials[trial.number].state == TrialState.RUNNING  # within the grace period
    time.sleep(3.5)
    alive.reap_stale()
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == trial.number
    assert retry.user_attrs[KEY_ATTR] == trial.user_attrs[KEY_ATTR] and retry.params == trial.params
    alive.reap_stale()  # a second reaper does not queue a second retry
    assert len(study.get_trials()) == len(trials)
    # the retry is the cell's only unfinished trial: it is claimed before the cells queued after it? no: in number order,
    # but it may run (it is the lowest unfinished trial of its key)
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
