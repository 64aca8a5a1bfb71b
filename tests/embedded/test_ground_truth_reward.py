"""The diagnostic oracle reward: share of a prompt's criteria met, by hand-placed renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffexp.embedded.scenes import Background, SceneObject, SceneSpec, render, to_tensor
from diffexp.rewards import build_reward

GREY = Background("light grey", (0.76, 0.76, 0.76), (0.0, 0.0), 0.0, 0)


def _scene(*objects: tuple[str, str, tuple[float, float]]) -> torch.Tensor:
    return to_tensor(render(SceneSpec(tuple(SceneObject(c, s, 7.0, centre) for c, s, centre in objects), GREY)))


@pytest.fixture(scope="module")
def reward():
    return build_reward("embedded_ground_truth")


def test_scores_the_share_of_criteria_met(reward) -> None:
    red_above_blue = _scene(("red", "circle", (16.0, 8.0)), ("blue", "square", (16.0, 24.0)))
    red_only = _scene(("red", "circle", (16.0, 16.0)))
    images = torch.stack([red_above_blue, red_above_blue, red_only, red_only, red_above_blue])
    prompts = [
        "a red circle above a blue square",  # both objects and the relation: 3 of 3
        "a red circle below a blue square",  # both objects, wrong relation: 2 of 3
        "a red circle above a blue square",  # one object missing (so no relation): 1 of 3
        "a red circle",  # a single-object prompt met: 1 of 1
        "a red star above a blue square",  # wrong shape for the first object: 2 of 3
    ]
    scores = reward(images, prompts)
    np.testing.assert_allclose(scores.numpy(), [1.0, 2 / 3, 1 / 3, 1.0, 2 / 3], atol=1e-6)


def test_is_not_differentiable_and_needs_parsable_prompts(reward) -> None:
    assert not reward.differentiable
    with pytest.raises(ValueError):
        reward(_scene(("red", "circle", (16.0, 16.0))).unsqueeze(0), ["a photo of a cat"])
