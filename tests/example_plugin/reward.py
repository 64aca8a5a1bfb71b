"""A reward: how much redder than the other channels an image is (differentiable)."""

from diffexp.rewards import Reward


class Redness(Reward):
    name = "example_redness"
    differentiable = True

    def score(self, images, prompts):
        return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))
