"""A strategy: the base CFG scale halved on every other sample (a toy, not a method)."""

from diffexp.exploration import ExplorationConfig, build_strategy
from diffexp.sampling.plan import SamplingPlan


class AlternatingGuidance:
    def __init__(self, config: ExplorationConfig):
        self.base = build_strategy({"strategy": "baseline", "guidance_scale": config.guidance_scale})

    def plan(self, prompts, num_steps, generator=None) -> SamplingPlan:
        plan = self.base.plan(prompts, num_steps, generator)
        scales = plan.guidance_scales.clone()
        scales[1::2] = scales[1::2] / 2
        return SamplingPlan(plan.prompts, plan.conditioning_prompts, scales, plan.phrase_weights, plan.noise_scales)


def factory(config: ExplorationConfig) -> AlternatingGuidance:
    return AlternatingGuidance(config)
