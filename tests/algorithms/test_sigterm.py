"""SIGTERM (a scheduler's pre-emption) and Ctrl-C stop a training within a step; the resume is exact."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

OVERRIDES = [
    "sample.num_batches_per_epoch=1",
    "run.num_epochs=3",
    "run.eval_every=100",
    "run.eval_num_prompts=2",
    "run.loggers=[csv]",
    "run.deterministic=true",
    "run.threads=2",
]


def train(tmp_path, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diffexp",
        "train",
        "--config",
        "diffexp/embedded/configs/ddpo.yaml",
        *OVERRIDES,
        f"run.output_dir={tmp_path}",
        f"run.name={name}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_within_a_step_and_the_resume_is_exact(tmp_path, signum):
    stopped = subprocess.Popen(train(tmp_path, "stopped"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # well inside epoch 2
    sent = time.time()
    stopped.send_signal(signum)
    _, err = stopped.communicate(timeout=120)
    waited = time.time() - sent
    assert stopped.returncode == 128 + signum, err[-3000:]
    assert waited < 30, waited
    assert f"stopped by {signal.Signals(signum).name}" in err and "re-run the same command to resume" in err
    state = torch.load(checkpoint, weights_only=True)
    assert state["diffexp"]["reward_queries"] == 16  # the end of epoch 1: epoch 2 was left unfinished
    assert not (tmp_path / "stopped" / "checkpoints" / "last.ckpt.tmp").exists()

    resumed = subprocess.run(train(tmp_path, "stopped"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    subprocess.run(train(tmp_path, "whole"), check=True, capture_output=True, timeout=600)
    curve = pd.read_csv(tmp_path / "stopped" / "csv" / "metrics.csv")
    whole = pd.read_csv(tmp_path / "whole" / "csv" / "metrics.csv")
    assert curve["reward_queries"].tolist() == [0, 16, 32, 48]
    for column in ["reward_mean", "loss", "approx_kl", "eval_reward_mean"]:
        pd.testing.assert_series_equal(curve[column], whole[column], check_exact=False, rtol=1e-6, atol=1e-9)
