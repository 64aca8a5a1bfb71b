"""The instruments of the TRL comparison (benchmark/peer/instruments.py): what they measure must
be what happened inside the block."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmark" / "peer"))
from instruments import PeakRSS, UNetClock  # noqa: E402 (a sibling file, importable once sys.path has its folder)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_rss_sees_a_freed_allocation_and_not_earlier_ones():
    earlier = np.ones(64 * 2**20 // 8)  # held before the block: not the block's increase
    with PeakRSS() as peak:
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched, then freed inside the block
        del block
    assert 200 * 2**20 < peak.increase_bytes < 320 * 2**20, peak.increase_bytes
    del earlier


def test_unet_clock_counts_unet_forward_and_backward_only():
    from diffusers import UNet2DConditionModel

    from diffexp.models.twins import tiny_sd15_pipeline

    unet = tiny_sd15_pipeline(seed=0).unet
    original = UNet2DConditionModel.forward
    x, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with UNetClock() as clock:
        torch.randn(256, 256) @ torch.randn(256, 256)  # not the UNet: not counted
        assert clock.total_s == 0.0
        unet(x, 10, encoder_hidden_states=emb).sample.mean().backward()
        assert clock.forward_s > 0 and clock.backward_s > 0
        clock.reset()
        assert clock.total_s == 0.0
    assert UNet2DConditionModel.forward is original  # the process-wide patch is undone
