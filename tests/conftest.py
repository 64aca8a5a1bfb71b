"""Shared fixtures: tiny random twins of SD 1.5 and SDXL (built once per session)."""

from __future__ import annotations

import pytest
import torch

from diffexp.models.twins import tiny_sd15_pipeline, tiny_sdxl_pipeline

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def sd15():
    return tiny_sd15_pipeline(seed=0)


@pytest.fixture(scope="session")
def sdxl():
    return tiny_sdxl_pipeline(seed=0)


@pytest.fixture(params=["sd15", "sdxl"])
def twin(request):
    """Each test using this runs on both architectures."""
    return request.getfixturevalue(request.param)
