"""The run directory as a contract: one training at a time, a resume only of the same run, a
restart that discards the old run, and never a non-finite checkpoint."""

import json
import subprocess
import sys
import time

import pytest
import torch
import yaml

from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.run_directory import RunDirectory, RunDirectoryError, config_differences
from diffexp.algorithms.runner import run
from diffexp.algorithms.stopping import NonFiniteError
from tests.helpers import NAMED

BASE = {
    "model": {"pretrained": "tiny-sd15"},
    "sample": {"num_steps": 3, "batch_size": 4, "num_batches_per_epoch": 1},
    "prompts": {"set": "list", "prompts": ["a cat", "a (red)1.2 dog"], "eval_options": {}},
    "reward": {"name": "brightness"},
    "train": {"batch_size": 2, "gradient_accumulation_steps": 1, "stat_tracking": {"min_count": 2, "buffer_size": 4}},
    "run": {"num_epochs": 2, "eval_every": 2, "eval_num_prompts": 1, "loggers": ["csv"], "threads": 1},
}


def config(tmp_path, name="r", **overrides):
    return load_config(None, {**_flat(BASE), "run.output_dir": str(tmp_path), "run.name": name, **overrides})


def _flat(data, prefix=""):
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and k not in ("eval_options",) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_a_second_training_into_a_locked_directory_stops_naming_the_holder(tmp_path):
    first = config(tmp_path)
    with RunDirectory.open(first) as held:
        held.check_and_record(first, None)
        before = (tmp_path / "r" / "config.yaml").read_bytes()
        start = time.time()
        with pytest.raises(RunDirectoryError, match=r"in use by another training \(host .*, PID \d+, started"):
            run(config(tmp_path, **{"train.learning_rate": 0.5}))
        assert time.time() - start < 5  # refused at once, before building anything
        assert (tmp_path / "r" / "config.yaml").read_bytes() == before  # the holder's record is untouched
        with pytest.raises(RunDirectoryError, match="in use"):
            RunDirectory.open(first, lock_timeout=0.5)  # waiting is possible, for a bounded time
    with RunDirectory.open(first):  # released: usable again
        pass


SLOW_FIRST = (  # the first training, slowed (0.5 s a sampling call) so that it surely holds the lock
    "import sys, time; from diffexp.algorithms.ddpo import DDPO; generate = DDPO.generate; "
    "DDPO.generate = lambda self, *a: (time.sleep(0.5), generate(self, *a))[1]; "
    "from diffexp.cli import main; sys.exit(main(['train', '--config', sys.argv[1]]))"
)


@pytest.mark.slow
def test_two_trainings_on_one_directory_the_second_exits_at_once(tmp_path):
    cfg = {**BASE, "run": {**BASE["run"], "num_epochs": 12, "output_dir": str(tmp_path), "name": "same"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_FIRST, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoint = tmp_path / "same" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:  # the first is training
        time.sleep(0.2)
    start = time.time()
    second = subprocess.run(
        [sys.executable, "-m", "diffexp", "train", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.time() - start
    assert first.poll() is None, "the first training ended before the second was refused: slow it more"
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"PID {first.pid}" in second.stderr and "in use by another training" in second.stderr
    assert elapsed < 30, elapsed  # it stops at once (the interpreter and imports take a few seconds)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    import pandas as pd

    curve = pd.read_csv(tmp_path / "same" / "csv" / "metrics.csv")
    assert curve["reward_queries"].tolist() == [4 * i for i in range(13)]  # each epoch once, no shifted rows
    assert not (tmp_path / "same" / "checkpoints" / "last.ckpt.tmp").exists()


def test_a_kill_leaves_no_stale_lock(tmp_path):
    """The lock is an OS lock: a SIGKILLed holder releases it, although the lock file stays."""
    script = (
        "import sys, time; from diffexp.algorithms.config import load_config; "
        "from diffexp.algorithms.run_directory import RunDirectory; "
        f"c = load_config(None, {{**{NAMED!r}, 'run.output_dir': {str(tmp_path)!r}, 'run.name': 'k'}}); "
        "d = RunDirectory.open(c); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    c = load_config(None, {**NAMED, "run.output_dir": str(tmp_path), "run.name": "k"})
    with pytest.raises(RunDirectoryError, match="in use"):
        RunDirectory.open(c)
    holder.kill()
    holder.wait()
    assert (tmp_path / "k" / "run.lock").exists()
    with RunDirectory.open(c):
        pass


@pytest.mark.parametrize(
    "change, field",
    [
        ({"train.learning_rate": 0.05}, "train.learning_rate"),
        ({"exploration.strategy": "cfg"}, "exploration.strategy"),
        ({"algorithm": "alignprop", "train": {}}, "algorithm"),
        ({"model.lora.rank": 8}, "model.lora.rank"),
        ({"run.seed": 3}, "run.seed"),
        ({"reward.name": "jpeg_compressibility"}, "reward.name"),
    ],
)
def test_a_resume_with_another_run_config_is_refused_and_changes_nothing(tmp_path, change, field):
    run(config(tmp_path, **{"run.num_epochs": 1}))
    folder = tmp_path / "r"
    files = {p: p.read_bytes() for p in [folder / "config.yaml", folder / "checkpoints" / "last.ckpt"]}
    with pytest.raises(RunDirectoryError, match=rf"(?s)different config:.*{field}.*run\.name=.*--restart"):
        run(config(tmp_path, **{"run.num_epochs": 2, **change}))
    assert {p: p.read_bytes() for p in files} == files
    assert not (folder / "resumes.jsonl").exists()


def test_a_longer_run_resumes_and_the_change_is_recorded(tmp_path):
    run(config(tmp_path, **{"run.num_epochs": 1}))
    module = run(config(tmp_path, **{"run.num_epochs": 2, "run.eval_every": 1}))
    assert module.reward_queries == 8
    record = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert record["run"]["num_epochs"] == 2
    changed = [yaml.safe_load(line)["changed"] for line in (tmp_path / "r" / "resumes.jsonl").read_text().splitlines()]
    assert changed == [{"run.eval_every": [2, 1], "run.num_epochs": [1, 2]}]


def test_a_run_from_before_a_new_config_field_still_resumes(tmp_path):
    """A checkpoint written before a field existed (here: exploration.noise_window, sample.resolution)
    resumes; the missing fields count as their defaults, which keep the old behaviour."""
    run(config(tmp_path, **{"run.num_epochs": 1}))
    path = tmp_path / "r" / "checkpoints" / "last.ckpt"
    saved = torch.load(path, weights_only=True)
    old = json.loads(saved["diffexp"]["config"])
    del old["exploration"]["noise_window"], old["sample"]["resolution"]
    saved["diffexp"]["config"] = json.dumps(old)
    torch.save(saved, path)
    assert run(config(tmp_path, **{"run.num_epochs": 2})).reward_queries == 8
    with pytest.raises(RunDirectoryError, match="learning_rate"):  # a real change is still refused
        run(config(tmp_path, **{"run.num_epochs": 3, "train.learning_rate": 0.05}))


def test_restart_discards_the_old_run(tmp_path):
    run(config(tmp_path, **{"run.num_epochs": 1}))
    module = run(config(tmp_path, **{"run.num_epochs": 1, "train.learning_rate": 0.05}), resume=False)
    assert module.reward_queries == 4  # started over, not resumed
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert json.loads(saved["diffexp"]["config"])["train"]["learning_rate"] == 0.05


def test_config_differences_lists_nested_fields():
    old = {"train": {"learning_rate": 1e-3, "adam_betas": [0.9, 0.999]}, "run": {"num_epochs": 1}}
    new = {"train": {"learning_rate": 1e-3, "adam_betas": [0.9, 0.99]}, "run": {"num_epochs": 1, "x": 1}}
    assert config_differences(old, new) == {"run.x": (None, 1), "train.adam_betas": ([0.9, 0.999], [0.9, 0.99])}


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf"])
def test_non_finite_numbers_are_refused_by_the_config(value):
    with pytest.raises(ConfigError, match="train.learning_rate: Input should be a finite number"):
        load_config(None, {**NAMED, "train.learning_rate": yaml.safe_load(value) if value != "inf" else float("inf")})


def test_a_non_finite_update_stops_the_run_and_the_checkpoint_stays_finite(tmp_path, monkeypatch):
    """Fault injection: the optimiser's second step of epoch 2 writes NaN into one LoRA weight."""
    from diffexp.algorithms.base import RewardFinetuningModule

    run(config(tmp_path, **{"run.num_epochs": 1}))
    original = RewardFinetuningModule.step_optimizer

    def poisoned(self, step="optimiser step"):
        if self.current_epoch == 1:
            with torch.no_grad():
                self.trainable[0][0, 0] = float("nan")
        return original(self, step)

    monkeypatch.setattr(RewardFinetuningModule, "step_optimizer", poisoned)
    with pytest.raises(NonFiniteError, match=r"epoch 1, update \(inner epoch 0, minibatch 0\): 1 trainable weights"):
        run(config(tmp_path, **{"run.num_epochs": 2}))
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["diffexp"]["reward_queries"] == 4  # the end of epoch 1, the last finite state
    assert all(bool(torch.isfinite(v).all()) for v in saved["state_dict"].values())


def test_output_dir_a_file_and_names_outside_it_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        run(load_config(None, {**NAMED, "run.output_dir": str(tmp_path / "file")}))
    for name in ["../../x", "a/b", "..", ""]:
        with pytest.raises(ConfigError, match="run.name"):
            load_config(None, {**NAMED, "run.name": name})


def test_gpu_accelerator_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RunDirectoryError, match="run.accelerator=gpu but torch sees no CUDA GPU"):
        run(config(tmp_path, **{"run.accelerator": "gpu"}))


def test_ddp_processes_on_cpu_share_the_cores(monkeypatch):
    import os

    from diffexp.algorithms.runner import configure_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        configure_threads(load_config(None, {**NAMED, "run.devices": 2, "run.accelerator": "cpu"}))
        assert torch.get_num_threads() == 4
        configure_threads(load_config(None, {**NAMED, "run.devices": 2, "run.accelerator": "cpu", "run.threads": 3}))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_restart_that_cannot_start_deletes_nothing(tmp_path, capsys, monkeypatch):
    """`--restart` with a reward typo is refused when the config is built; one whose model fails to
    build leaves the old run as it was too (the deletion comes after the new run is built)."""
    from diffexp.algorithms import runner
    from diffexp.cli import main

    run(config(tmp_path, **{"run.num_epochs": 1}))
    folder = tmp_path / "r"
    files = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "train.lock"}
    settings = [f"{k}={json.dumps(v)}" for k, v in _flat(BASE).items()]
    args = ["train", "--restart", *settings, f"run.output_dir={tmp_path}", "run.name=r", "run.num_epochs=1"]
    assert main([*args, "reward.name=embedded_aesthetc"]) == 2
    assert "unknown reward 'embedded_aesthetc'" in capsys.readouterr().err
    monkeypatch.setattr(runner, "build_module", lambda config: (_ for _ in ()).throw(OSError("weights missing")))
    with pytest.raises(OSError, match="weights missing"):
        run(config(tmp_path, **{"run.num_epochs": 1}), resume=False)
    assert {p: p.read_bytes() for p in files} == files
