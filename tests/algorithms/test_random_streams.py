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
