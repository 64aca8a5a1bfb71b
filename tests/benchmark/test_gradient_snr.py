"""benchmark/probes/ddpo_gradient_snr.py: the batch gradient covers the configured steps only, and the
per-module split picks out each LoRA target kind's B matrices."""

import pytest
import torch

from benchmark.probes.ddpo_gradient_snr import base_module, batch_gradient, lora_groups
from diffexp.algorithms.config import load_config
from diffexp.algorithms.runner import build_module

TINY = {
    "model.pretrained": "tiny-sd15",
    "model.lora.target_modules": ["to_q", "to_k"],
    "sample.num_steps": 4,
    "sample.batch_size": 4,
    "sample.num_batches_per_epoch": 1,
    "sample.samples_per_prompt": 2,
    "train.batch_size": 2,
    "train.gradient_accumulation_steps": 1,
    "prompts.set": "list",
    "prompts.prompts": ["a cat", "a dog"],
    "prompts.eval_options": {},
    "reward.name": "brightness",
    "run.threads": 1,
}


def tiny_module(tmp_path, **extra):
    module = build_module(load_config(None, {**TINY, "run.output_dir": str(tmp_path), **extra}))
    module.sampler = module.make_sampler()
    return module


def test_lora_groups_index_each_target_kinds_b_matrices_once(tmp_path):
    module = tiny_module(tmp_path)
    names = [n for n, _ in module.unet.named_parameters() if "lora_" in n]
    # tag every entry of the flattened vector with the index of the parameter it comes from
    owner = torch.cat([torch.full((p.numel(),), i) for i, p in enumerate(module.trainable)])
    groups = lora_groups(module)
    assert set(groups) == {"attn1.to_q", "attn1.to_k", "attn2.to_q", "attn2.to_k"}
    covered = torch.cat(list(groups.values()))
    b_entries = torch.cat([torch.nonzero(owner == i).flatten() for i, n in enumerate(names) if "lora_B" in n])
    assert torch.equal(covered.sort().values, b_entries.sort().values)  # every B entry, once; no A entry
    for kind, index in groups.items():
        assert all(kind in names[i] and "lora_B" in names[i] for i in owner[index].unique().tolist())


def test_batch_gradient_uses_only_the_windows_steps(tmp_path, monkeypatch):
    module = tiny_module(tmp_path, **{"train.timestep_window": [0.5, 1.0]})
    seen = []
    original = module.sampler.step_log_prob

    def recording(traj, steps):
        seen.extend(steps.tolist())
        return original(traj, steps)

    monkeypatch.setattr(module.sampler, "step_log_prob", recording)
    grad = batch_gradient(module, minibatch=2)
    assert sorted(set(seen)) == [2, 3] and len(seen) == 2 * 4  # steps 2 and 3 of 4, each for all 4 samples
    assert grad.shape == (sum(p.numel() for p in module.trainable),) and grad.abs().sum() > 0


@pytest.mark.slow
def test_base_module_draws_the_lora_init_of_the_configs_seed(tmp_path):
    # The B matrices' gradient depends on the A matrices, which LoRA draws at random: two processes
    # (here: two builds after other random draws) must get the same A for the same run.seed. The
    # embedded model, because the tiny twin reseeds the generator when it is built.
    overrides = {"train.batch_size": 4, "run.output_dir": str(tmp_path)}
    first = base_module(overrides, batch_size=4, sampling_seed=3)
    torch.randn(100)  # consume the global generator, as earlier work in a process would
    second = base_module(overrides, batch_size=4, sampling_seed=3)
    other_seed = base_module({**overrides, "run.seed": 1}, batch_size=4, sampling_seed=3)
    a_matrices = [i for i, p in enumerate(first.trainable) if p.abs().sum() > 0]  # B starts at 0
    assert a_matrices
    for i in a_matrices:
        assert torch.equal(first.trainable[i], second.trainable[i])
        assert not torch.equal(first.trainable[i], other_seed.trainable[i])
    assert torch.equal(batch_gradient(first), batch_gradient(second))
