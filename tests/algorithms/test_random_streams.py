"""Common random numbers across arms: two strategies of one seed draw the same prompts, the same
initial noise and the same step noise, since exploration draws from a stream of its own."""

import pytest
import torch

from diffexp.algorithms.config import load_config
from diffexp.algorithms.random_streams import RandomStreams
from diffexp.algorithms.runner import build_module

PROMPTS = ["a cat", "a (red)1.2 dog", "a green bird on a branch", "a small house", "a blue car", "a tree"]
BASE = {
    "model.pretrained": "tiny-sd15",
    "sample.num_steps": 3,
    "sample.batch_size": 4,
    "sample.num_batches_per_epoch": 2,
    "prompts.set": "list",
    "prompts.prompts": PROMPTS,
    "prompts.eval_options": {},
    "reward.name": "brightness",
    "run.loggers": ["csv"],
    "run.threads": 1,
    "run.seed": 3,
}


def settings(algorithm: str, **extra) -> dict:
    own = {"train.batch_size": 2} if algorithm == "ddpo" else {"sample.num_batches_per_epoch": 1}
    return {**BASE, **own, "algorithm": algorithm, **extra}


def first_epoch(tmp_path, algorithm: str, strategy: str):
    config = load_config(
        None, settings(algorithm, **{"exploration.strategy": strategy, "run.output_dir": str(tmp_path)})
    )
    torch.manual_seed(0)
    module = build_module(config)
    module.on_fit_start()
    samples = module.generate(0)
    return getattr(samples, "traj", samples)


@pytest.mark.parametrize("algorithm", ["ddpo", "alignprop"])
def test_two_arms_of_one_seed_share_prompts_and_noise(tmp_path, algorithm):
    base = first_epoch(tmp_path, algorithm, "baseline")
    explored = first_epoch(tmp_path, algorithm, "diffexp")
    assert base.prompts == explored.prompts  # the training prompts drawn
    assert torch.equal(base.latents[:, 0], explored.latents[:, 0])  # x_T of every sample
    assert not torch.equal(base.guidance_scales, explored.guidance_scales)  # and yet DiffExp explored
    other_seed = load_config(None, settings(algorithm, **{"run.seed": 4, "run.output_dir": str(tmp_path)}))
    module = build_module(other_seed)
    module.on_fit_start()
    samples = module.generate(0)
    traj = getattr(samples, "traj", samples)
    assert not torch.equal(traj.latents[:, 0], base.latents[:, 0])


def test_alignprops_random_truncation_is_common_to_the_arms(tmp_path):
    masks = []
    for strategy in ("baseline", "diffexp"):
        extra = {"exploration.strategy": strategy, "run.output_dir": str(tmp_path)}
        extra |= {"train.truncation": {"mode": "per_sample", "k_min": 1, "k_max": 3}}
        module = build_module(load_config(None, settings("alignprop", **extra)))
        module.on_fit_start()
        masks.append(module.generate(0).grad_steps)
    assert torch.equal(masks[0], masks[1]) and masks[0].sum(dim=1).unique().numel() > 1


def test_the_step_noise_is_common_too():
    """Same model output, two arms' streams after the same draws: the step noise is equal."""
    a, b = RandomStreams(), RandomStreams()
    a.seed(5), b.seed(5)
    torch.rand(7, generator=a.exploration)  # one arm explored, the other did not
    assert torch.equal(torch.randn(3, generator=a.noise), torch.randn(3, generator=b.noise))
    assert torch.equal(torch.randint(9, (4,), generator=a.prompts), torch.randint(9, (4,), generator=b.prompts))


def test_streams_resume_from_their_state_and_refuse_an_old_checkpoint():
    a = RandomStreams()
    a.seed(1)
    torch.randn(5, generator=a.noise)
    b = RandomStreams()
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.randn(3, generator=a.noise), torch.randn(3, generator=b.noise))
    with pytest.raises(ValueError, match="random streams"):
        b.load_state_dict({"noise": a.noise.get_state()})


@pytest.mark.parametrize(
    ("algorithm", "pipeline"), [("grpo", "tiny-sd15"), ("alignprop", "tiny-sd15"), ("grpo", "tiny-sd3")]
)
def test_shared_group_noise_starts_a_group_from_one_latent(tmp_path, algorithm, pipeline):
    """sample.share_group_noise: the two samples of a prompt share x_T, their step noise differs,
    and other groups start elsewhere; off (the default), every sample has its own x_T."""
    extra = {"model.pretrained": pipeline, "sample.samples_per_prompt": 2, "run.output_dir": str(tmp_path)}
    if algorithm == "grpo":
        extra |= {"train.batch_size": 2, "train.beta": 0.0}
    for share in (True, False):
        module = build_module(load_config(None, settings(algorithm, **extra, **{"sample.share_group_noise": share})))
        module.on_fit_start()
        samples = module.generate(0)
        traj = getattr(samples, "traj", samples)
        x_t, x_0 = traj.latents[:, 0], traj.latents[:, -1]
        assert torch.equal(x_t[0], x_t[1]) == share and torch.equal(x_t[2], x_t[3]) == share
        assert not torch.equal(x_t[0], x_t[2]) and not torch.equal(x_0[0], x_0[1])
