"""End to end on the tiny SD 1.5 twin: grids with 4 workers (SQLite, PostgreSQL), a worker killed
mid-trial, and a TPE search with pruning. Acceptance tests of the sweep harness (issue #7)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from diffexp.algorithms.mlflow_run import Tracker
from diffexp.algorithms.run_record import KEY_ATTR
from diffexp.harness.cli import sweep_main
from diffexp.harness.context import resolve_context, setup_study
from diffexp.harness.launch import _subprocess_env, run_sweep, worker_command
from diffexp.harness.progress import group_trials
from diffexp.harness.storage import open_storage
from diffexp.harness.study import load_study

ROOT = Path(__file__).resolve().parents[2]
TINY_GRID = ROOT / "experiments" / "ablations" / "tiny_grid.yaml"
TINY_SEARCH = ROOT / "experiments" / "searches" / "tiny_cfg_tpe.yaml"
POSTGRES_URL = os.environ.get("DIFFEXP_TEST_POSTGRES_URL")


def study_file(tmp_path, source=TINY_GRID, **changes) -> Path:
    data = yaml.safe_load(source.read_text())
    data["name"] = f"{data['name']}-{uuid.uuid4().hex[:8]}"  # unique: a shared database keeps old studies
    data.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(ctx):
    storage = open_storage(ctx.storage, ctx.study.spec.heartbeat_interval, ctx.study.spec.effective_grace_period)
    return optuna.load_study(study_name=ctx.study.name, storage=storage)


def assert_every_cell_exactly_once(ctx, epochs: int, per_epoch: int = 2):
    """One COMPLETE trial per cell; one MLflow run per cell with the metric histories."""
    study = load(ctx)
    cells = {c.key: c for c in ctx.study.cells()}
    groups = group_trials(study.get_trials())
    assert set(groups) == set(cells)
    for key, trials in groups.items():
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 1, (key, [(t.number, t.state) for t in trials])
        assert complete[0].params == cells[key].params
        assert all(t.state == TrialState.FAIL for t in trials if t not in complete)
    tracker = Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(cells)  # one run per cell
    steps = [per_epoch * (i + 1) for i in range(epochs)]
    for run in runs:
        tags, key = run.data.tags, run.data.tags["trial_key"]
        assert run.info.status == "FINISHED"
        assert tags["strategy"] == cells[key].params["exploration.strategy"] and tags["seed"] == str(
            cells[key].params["run.seed"]
        )
        assert tags["algorithm"] == "ddpo" and tags["reward"] == "brightness" and tags["prompt_set"] == "list(2)"
        assert len(tags["config_hash"]) == 12 and tags["checkpoint_dir"].endswith(f"trials/{key}/checkpoints")
        assert (Path(tags["checkpoint_dir"]) / "last.ckpt").exists()
        for metric in ("reward_mean", "reward_std", "diversity", "loss"):
            history = tracker.client.get_metric_history(run.info.run_id, metric)
            assert sorted({m.step for m in history}) == steps, (key, metric)  # against reward queries
        assert tracker.client.get_metric_history(run.info.run_id, "eval_reward_mean")
        artifacts = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "eval_images"} <= artifacts
        assert run.data.params["sweep.exploration.strategy"] == cells[key].params["exploration.strategy"]
    return study


def grid_with_workers(tmp_path, capfd, storage=None, workers=4):
    path = study_file(tmp_path, heartbeat_interval=2, grace_period=60)
    ctx = resolve_context(path, tmp_path / "run", storage)
    argv = [str(path), "--workers", str(workers), "--run-dir", str(tmp_path / "run")] + (
        ["--storage", storage] if storage else []
    )
    assert sweep_main(argv) == 0  # what `diffexp sweep` runs
    out = capfd.readouterr().out
    ran = {w for w in range(workers) if f" w{w}] trial" in out}
    assert len(ran) >= 2, out[-3000:]  # the workers shared the grid (which ones got a cell is a race)
    assert f"study {ctx.study.name}: done 4/4, running 0, failed 0, remaining 0" in out
    assert "best trial #" in out
    # the console: a few study lines and one line per finished run; each run's own output in its log
    lines = [line for line in out.splitlines() if line.strip()]
    finished = [line for line in lines if ": COMPLETE value" in line]
    assert len(finished) == 4 and len(lines) <= 4 + 8, lines
    assert "Loading" not in out and "Tip" not in out and "epoch 1/2" not in out
    for cell in ctx.study.cells():
        log = (ctx.run_dir / "trials" / cell.key / "train.log").read_text()
        assert f"{cell.key}: start (" in log and "epoch 2/2" in log
    try:
        assert_every_cell_exactly_once(ctx, epochs=2)
    except AssertionError:
        print(out[-6000:])  # the workers' log, for the failure report
        raise
    return ctx


@pytest.mark.slow
def test_grid_four_workers_sqlite(tmp_path, capfd):
    ctx = grid_with_workers(tmp_path, capfd)
    assert ctx.storage.url == f"sqlite:///{(tmp_path / 'run').resolve()}/optuna.db"
    assert ctx.tracking_uri == f"sqlite:///{(tmp_path / 'run').resolve()}/mlflow.db"
    # re-running a finished study runs nothing and changes nothing
    assert run_sweep(ctx, workers=1) == 0
    assert "start (" not in capfd.readouterr().out
    assert len(load(ctx).trials) == 4
    assert sweep_main([str(ctx.study.path), "--status", "--run-dir", str(ctx.run_dir)]) == 0
    status = capfd.readouterr().out
    for cell in ctx.study.cells():
        assert f"{cell.key:<44} done" in status


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES_URL,
    reason='DIFFEXP_TEST_POSTGRES_URL is not set (start a server: eval "$(bash benchmark/ci/postgres.sh)")',
)
def test_grid_four_workers_postgres(tmp_path, capfd):
    ctx = grid_with_workers(tmp_path, capfd, storage=POSTGRES_URL)
    assert ctx.storage.url.startswith("postgresql")


@pytest.mark.slow
def test_two_launchers_on_a_new_study_both_exit_0(tmp_path):
    """Both set the study up at once (Optuna's and MLflow's schemas on new SQLite files) and run
    both exit 0 and every cell is queued (a cell queued twice is closed as a duplicate when claimed)."""
    path = study_file(tmp_path)
    command = [sys.executable, "-m", "diffexp", "sweep", str(path), "--run-dir", str(tmp_path / "run"), "--status"]
    setup = [sys.executable, "-c", SETUP_ONLY, str(path), str(tmp_path / "run")]
    procs = [subprocess.Popen(setup, env=_subprocess_env(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert subprocess.run(command, env=_subprocess_env(), capture_output=True).returncode in (0, 1)
    ctx = resolve_context(path, tmp_path / "run")
    assert set(group_trials(load(ctx).trials)) == {c.key for c in ctx.study.cells()}


SETUP_ONLY = """
import sys
from diffexp.harness.context import resolve_context, setup_study
setup_study(resolve_context(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.slow
def test_worker_killed_mid_trial(tmp_path):
    """SIGKILL a worker after its trial's first checkpoint: the other worker declares the trial
    dead after the grace period, re-runs it from that checkpoint, and every cell completes once."""
    path = study_file(
        tmp_path, heartbeat_interval=1, grace_period=15, overrides={"run.num_epochs": 4, "run.eval_every": 4}
    )
    ctx = resolve_context(path, tmp_path / "run")
    setup_study(ctx)
    logs = [open(tmp_path / f"w{i}.log", "w") for i in range(2)]
    procs = {}
    for i in range(2):
        p = subprocess.Popen(
            worker_command(ctx, f"w{i}"), env=_subprocess_env(), stdout=logs[i], stderr=subprocess.STDOUT
        )
        procs[p.pid] = p
    study = load(ctx)
    victim = None
    try:
        deadline = time.time() + 900
        while victim is None and time.time() < deadline:
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                pid = t.user_attrs.get("diffexp:pid")
                ckpt = ctx.run_dir / "trials" / t.user_attrs.get(KEY_ATTR, "?") / "checkpoints" / "last.ckpt"
                if pid in procs and ckpt.exists():
                    os.kill(pid, signal.SIGKILL)
                    victim = t
                    break
            time.sleep(0.1)
        assert victim is not None, "no trial reached a checkpoint"
        procs[victim.user_attrs["diffexp:pid"]].wait(timeout=60)
        survivor = next(p for pid, p in procs.items() if pid != victim.user_attrs["diffexp:pid"])
        assert survivor.wait(timeout=900) == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    study = assert_every_cell_exactly_once(ctx, epochs=4)
    dead_pid = victim.user_attrs["diffexp:pid"]
    # the trial the worker was running when it died (normally `victim`; if the kill landed just as
    # it finished, the next one it had claimed) was declared dead by the survivor and re-run once
    killed = [t for t in study.trials if t.user_attrs.get("diffexp:pid") == dead_pid and t.state == TrialState.FAIL]
    assert len(killed) == 1, [(t.number, t.state) for t in study.trials]
    killed = killed[0]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs[KEY_ATTR] == killed.user_attrs[KEY_ATTR] and retries[0].params == killed.params
    survivor_log = next(
        log
        for log in tmp_path.glob("w*.log")
        if f"trial #{killed.number} {killed.user_attrs[KEY_ATTR]}: no heartbeat" in log.read_text()
    )
    assert "no heartbeat for 15s" in survivor_log.read_text()
    # the trial's own lines (its start, the retry, the resume) are in its log, not the worker's
    text = (ctx.run_dir / "trials" / killed.user_attrs[KEY_ATTR] / "train.log").read_text()
    assert f"retry of #{killed.number}" in text
    if killed.number == victim.number:  # it had a checkpoint: the retry resumed from it
        assert (
            retries[0]
            .user_attrs["diffexp:resumed_from"]
            .endswith(f"{killed.user_attrs[KEY_ATTR]}/checkpoints/last.ckpt")
        )
        assert "resuming from" in text


@pytest.mark.slow
def test_a_worker_declared_dead_leaves_the_retrys_mlflow_run_alone(tmp_path, monkeypatch):
    """A live worker whose trial another worker declared dead (a heartbeat stalled on a busy
    database) stops at its next batch without logging into, or failing, the MLflow run its
    retry now owns."""
    import diffexp.harness.worker as worker_module
    from diffexp.harness.worker import Worker

    path = study_file(tmp_path, overrides={"run.num_epochs": 3, "run.eval_every": 3})
    ctx = resolve_context(path, tmp_path / "run")
    setup_study(ctx)
    w = Worker(ctx, "w")
    real_callback = worker_module.trial_callback
    seen = {}

    def declared_dead_after_first_epoch(worker, trial, key, heartbeat, prune):
        callback = real_callback(worker, trial, key, heartbeat, prune)
        real_epoch_end = callback.on_train_epoch_end

        def on_train_epoch_end(trainer, module):
            if trainer.current_epoch == 0:  # what the reaper and the retry's worker do meanwhile
                worker.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                run_id = trial.user_attrs["diffexp:mlflow_run_id"]
                worker.tracker.finish_trial(run_id, "COMPLETE", 1.0)
                seen["run_id"], seen["losses"] = run_id, len(worker.tracker.client.get_metric_history(run_id, "loss"))
                heartbeat.beat()
            real_epoch_end(trainer, module)

        callback.on_train_epoch_end = on_train_epoch_end
        return callback

    monkeypatch.setattr(worker_module, "trial_callback", declared_dead_after_first_epoch)
    trial = w.claim_waiting()
    assert w.run_trial(trial) == "LOST"
    run = w.tracker.client.get_run(seen["run_id"])
    assert run.info.status == "FINISHED"  # not the FAILED Lightning sets on an exception
    assert len(w.tracker.client.get_metric_history(seen["run_id"], "loss")) == seen["losses"]


@pytest.mark.slow
def test_tpe_search_reports_best_trial(tmp_path, capsys):
    path = study_file(tmp_path, TINY_SEARCH)
    ctx = resolve_context(path, tmp_path / "run")
    assert load_study(path).kind == "search"
    assert run_sweep(ctx, workers=1) == 0
    out = capsys.readouterr().out
    study = load(ctx)
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:  # intermediate values against reward queries (2 samples per epoch)
        assert set(t.intermediate_values) <= {2, 4, 6} and 2 in t.intermediate_values
        assert {"exploration.cfg.kind", "exploration.guidance_scale"} <= set(t.params)
        assert ("exploration.cfg.start" in t.params) == (t.params["exploration.cfg.kind"] == "linear")
    best = study.best_trial
    assert f"best trial #{best.number} ({best.user_attrs[KEY_ATTR]}): value {best.value:.6g}" in out
    tracker = Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted(r.data.tags["trial_key"] for r in runs) == [f"t{i:04d}" for i in range(6)]


@pytest.mark.slow
def test_pruning_stops_trials_below_the_median(tmp_path, capsys):
    """Two earlier trials with far better intermediate rewards: the median pruner stops every new
    trial at its first checkpoint (2 reward queries); pruned runs are closed in MLflow."""
    path = study_file(
        tmp_path, TINY_SEARCH, search={**yaml.safe_load(TINY_SEARCH.read_text())["search"], "n_trials": 4}
    )
    ctx = resolve_context(path, tmp_path / "run")
    study = setup_study(ctx)
    dists = {
        "exploration.cfg.kind": optuna.distributions.CategoricalDistribution(["low_then_base", "linear"]),
        "exploration.guidance_scale": optuna.distributions.FloatDistribution(2.0, 8.0),
    }
    for i in range(2):
        study.add_trial(
            optuna.trial.create_trial(
                params={"exploration.cfg.kind": "linear", "exploration.guidance_scale": 5.0},
                distributions=dists,
                value=10.0,
                intermediate_values={2: 10.0, 4: 10.0, 6: 10.0},
                user_attrs={KEY_ATTR: f"earlier{i}"},
            )
        )
    assert run_sweep(ctx, workers=1) == 0
    out = capsys.readouterr().out
    new = load(ctx).get_trials()[2:]
    assert len(new) == 2
    for t in new:
        assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [2]
        assert f"trial #{t.number} {t.user_attrs[KEY_ATTR]}: PRUNED" in out and "pruned at 2 reward queries" in out
    tracker = Tracker(ctx.tracking_uri, ctx.study.name, ctx.run_dir)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert len(runs) == 2 and all(r.data.tags["optuna.state"] == "PRUNED" and r.info.status == "KILLED" for r in runs)
    assert "done 0 (+2 pruned)/4" not in out  # the earlier trials count as done
    assert f"study {ctx.study.name}: done 2 (+2 pruned)/4, running 0, failed 0, remaining 0" in out
