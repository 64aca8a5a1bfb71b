"""Weight resolution (local file/folder, offline hub cache), actionable errors and pickle-safe loading."""

from __future__ import annotations

import pickle

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from diffexp.rewards import REWARDS, RewardWeightsNotFound, UnsafeCheckpoint, build_reward, build_weighted_sum
from diffexp.rewards.loading import WeightsSpec, is_hub_id, load_state_dict, resolve_file

SPEC = WeightsSpec(
    reward="demo",
    what="the demo head",
    argument="head_weights",
    filenames=("head.safetensors", "head.pth"),
    download="`hf download org/demo head.safetensors`",
)


def test_resolves_a_file_or_a_folder(tmp_path):
    path = tmp_path / "head.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert resolve_file(path, SPEC) == path
    assert resolve_file(tmp_path, SPEC) == path
    assert resolve_file(str(tmp_path), SPEC) == path


def test_missing_weight_error_is_actionable(tmp_path):
    with pytest.raises(RewardWeightsNotFound) as err:
        resolve_file(tmp_path / "nowhere", SPEC)
    message = str(err.value)
    for needle in (
        "demo:",
        "the demo head",
        "hf download org/demo head.safetensors",
        "head_weights=",
        "head.safetensors or head.pth",
        "local_files_only=False",
    ):
        assert needle in message
    with pytest.raises(RewardWeightsNotFound, match="holds none of"):
        resolve_file(tmp_path, SPEC)  # an existing folder without the file


def test_uncached_hub_id_raises_without_network():
    assert is_hub_id("org/demo") and is_hub_id("org/demo/sub/head.pth")
    assert not is_hub_id("/abs/path") and not is_hub_id("./rel") and not is_hub_id("plain")
    with pytest.raises(RewardWeightsNotFound, match="not in the local hub cache"):
        resolve_file("diffexp-test-nobody/never-uploaded", SPEC)


def test_hub_id_is_read_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--demo"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, snapshot / "head.pth")
    assert resolve_file("org/demo", SPEC).name == "head.pth"  # first of spec.filenames present
    assert resolve_file("org/demo/head.pth", SPEC).name == "head.pth"


def test_state_dict_formats(tmp_path):
    tensors = {"a.weight": torch.randn(2, 3), "b": torch.zeros(1)}
    save_file(tensors, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()}}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = load_state_dict(tmp_path / name)
        assert loaded.keys() == tensors.keys()
        assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


class _Payload:
    """Unpickling this would write a marker file: the code must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused_not_run(tmp_path, writer):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "head.pth"
    payload = {"layers.0.weight": torch.zeros(1), "evil": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(UnsafeCheckpoint, match="refusing to load"):
        load_state_dict(path)
    # ... and through a real reward's loading path
    reward = build_reward("aesthetic", head_weights=str(path), clip_weights=str(tmp_path / "clip.pt"))
    with pytest.raises(UnsafeCheckpoint):
        reward(torch.rand(1, 3, 8, 8), ["x"])
    assert not marker.exists()


def test_construction_is_lazy_and_weights_stay_out_of_the_module_tree(tmp_path):
    for name in ("aesthetic", "pickscore", "hps", "hpsv2.1"):
        reward = build_reward(name)  # defaults point at uncached hub ids: nothing may load yet
        assert not reward.loaded and list(reward.parameters()) == [] and reward.state_dict() == {}
    reward = build_reward("pickscore", model=str(tmp_path / "missing"))
    with pytest.raises(RewardWeightsNotFound, match=r"`model=\.\.\.`"):
        reward(torch.rand(1, 3, 8, 8), ["a cat"])


def test_registry_and_weighted_sum_from_config():
    assert {"aesthetic", "pickscore", "hps", "hpsv2.1", "jpeg_compressibility", "jpeg_incompressibility"} <= set(
        REWARDS
    )
    total = build_weighted_sum(
        {"jpeg_incompressibility": 2.0, "small": {"reward": "jpeg_compressibility", "weight": 0.5}}
    )
    images = torch.rand(3, 3, 16, 16)
    size = build_reward("jpeg_incompressibility")(images, ["x"] * 3)
    assert torch.allclose(total(images, ["x"] * 3), 2.0 * size - 0.5 * size)
    assert not total.differentiable
