"""Exploration strategies: CFG schedules produce the scales they claim; phrase weighting and the registry."""

import pytest
import torch
from pydantic import ValidationError

from diffexp.exploration import (
    STRATEGIES,
    CFGScheduleConfig,
    ExplorationConfig,
    PhraseWeightingConfig,
    build_strategy,
    guidance_scales,
    register_strategy,
)
from diffexp.exploration.phrase_weighting import draw_phrase_weights
from diffexp.prompts.base import Prompt


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_constant():
    s = guidance_scales(CFGScheduleConfig(kind="constant"), 7.5, 3, 10, g())
    assert s.shape == (3, 10) and torch.all(s == 7.5)


def test_low_then_base_fixed():
    s = guidance_scales(CFGScheduleConfig(kind="low_then_base", low=1.5, fraction=0.3), 7.5, 2, 10, g())
    expected = torch.tensor([1.5] * 3 + [7.5] * 7)
    assert torch.equal(s, expected.expand(2, -1))


def test_low_then_base_per_sample_draws():
    config = CFGScheduleConfig(kind="low_then_base", low=(1.0, 3.0), fraction=(0.1, 0.6))
    s = guidance_scales(config, 6.0, 200, 20, g())
    for row in s:
        low = row[0].item()
        n_low = int((row == low).sum())
        assert 1.0 <= low <= 3.0
        assert 2 <= n_low <= 12  # round(0.1*20) .. round(0.6*20)
        assert torch.all(row[:n_low] == low) and torch.all(row[n_low:] == 6.0)  # low first, then base
    assert s[:, 0].std() > 0.3  # really drawn per sample
    assert len({int((row == row[0]).sum()) for row in s}) > 5


def test_linear_ramp():
    s = guidance_scales(CFGScheduleConfig(kind="linear", start=1.0, end=9.0), 5.0, 2, 5, g())
    assert torch.allclose(s, torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]).expand(2, -1))
    s = guidance_scales(CFGScheduleConfig(kind="linear", start=2.0), 4.0, 1, 3, g())  # end defaults to base
    assert torch.allclose(s, torch.tensor([[2.0, 3.0, 4.0]]))


def test_random_per_sample_constant_over_steps():
    s = guidance_scales(CFGScheduleConfig(kind="random", scale_range=(2.0, 4.0)), 5.0, 500, 7, g())
    assert torch.all(s == s[:, :1])
    assert 2.0 <= s.min() and s.max() <= 4.0
    assert abs(s[:, 0].mean().item() - 3.0) < 0.1


def test_schedules_are_reproducible():
    config = CFGScheduleConfig()
    assert torch.equal(guidance_scales(config, 5.0, 8, 10, g(3)), guidance_scales(config, 5.0, 8, 10, g(3)))


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(kind="cosine"), "kind"),
        (dict(fraction=1.5), "fraction"),
        (dict(fraction=(0.6, 0.2)), "fraction"),
        (dict(low=-1.0), "low"),
        (dict(lowww=1.0), "lowww"),
    ],
)
def test_bad_schedule_config_names_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        CFGScheduleConfig(**bad)


def test_phrase_weighting_uses_known_phrases_and_range():
    prompt = Prompt("a monkey washing the dishes", ("monkey", "washing the dishes"))
    config = PhraseWeightingConfig(num_phrases=1, weight=(1.1, 1.4))
    seen = set()
    for seed in range(40):
        weights = draw_phrase_weights(config, prompt, g(seed))
        assert len(weights) == 1
        ((phrase, w),) = weights.items()
        assert phrase in prompt.phrases and 1.1 <= w <= 1.4
        seen.add(phrase)
    assert seen == set(prompt.phrases)


def test_phrase_probability_zero_never_weights():
    config = PhraseWeightingConfig(probability=0.0)
    assert all(draw_phrase_weights(config, Prompt("a cat and a dog"), g(s)) == {} for s in range(10))


@pytest.mark.parametrize("name", ["baseline", "cfg", "phrase", "diffexp"])
def test_strategies_keep_original_prompt_for_reward(name):
    prompts = [Prompt("a monkey washing the dishes", ("monkey", "washing the dishes")), "a cat and a dog, watercolor"]
    plan = build_strategy(name).plan(prompts * 4, 10, g())
    assert plan.prompts == ["a monkey washing the dishes", "a cat and a dog, watercolor"] * 4
    weighted = any("(" in c for c in plan.conditioning_prompts)
    scheduled = not torch.all(plan.guidance_scales == 5.0)
    assert weighted == (name in ("phrase", "diffexp"))
    assert scheduled == (name in ("cfg", "diffexp"))


def test_user_weighted_prompt_is_stripped_for_reward():
    plan = build_strategy("baseline").plan(["a (red circle)1.3 above a blue square"], 4, g())
    assert plan.prompts == ["a red circle above a blue square"]
    assert plan.conditioning_prompts == ["a (red circle)1.3 above a blue square"]


def test_registry_accepts_user_strategies():
    class Greedy:
        def plan(self, prompts, num_steps, generator=None):
            return build_strategy("baseline").plan(prompts, num_steps, generator)

    register_strategy("test-greedy")(lambda config: Greedy())
    try:
        assert isinstance(build_strategy("test-greedy"), Greedy)
        with pytest.raises(ValueError, match="already registered"):
            register_strategy("test-greedy")(lambda c: Greedy())
    finally:
        STRATEGIES.unregister("test-greedy")
    with pytest.raises(ValidationError, match="unknown exploration strategy"):
        ExplorationConfig(strategy="test-greedy")


def test_noise_window_marks_the_chosen_steps():
    from diffexp.exploration.step_windows import NoiseWindowConfig, noise_scales

    fixed = noise_scales(NoiseWindowConfig(window=(0.0, 0.4), width=None), 3, 10)
    assert fixed.tolist() == [[1.0] * 4 + [0.0] * 6] * 3
    some = noise_scales(NoiseWindowConfig(window=(0.2, 1.0), width=None, outside=0.5), 1, 10)
    assert some.tolist() == [[0.5, 0.5] + [1.0] * 8]
    sliding = noise_scales(NoiseWindowConfig(window=(0.0, 1.0), width=0.2), 64, 10, torch.Generator().manual_seed(0))
    assert (sliding.sum(dim=1) == 2).all()  # two adjacent noisy steps per sample ...
    starts = sliding.argmax(dim=1)
    assert (sliding[torch.arange(64), starts + 1] == 1).all()
    assert len(set(starts.tolist())) >= 6  # ... at starts drawn per sample


def test_guidance_interval_keeps_the_scale_only_inside():
    from diffexp.exploration.step_windows import GuidanceIntervalConfig, limit_guidance

    scales = torch.full((2, 10), 4.5)
    limited = limit_guidance(GuidanceIntervalConfig(interval=(0.3, 0.8)), scales)
    assert limited[0].tolist() == [1.0] * 3 + [4.5] * 5 + [1.0] * 2


@pytest.mark.parametrize(
    "section, bad, match",
    [
        ("noise_window", {"window": [0.6, 0.2]}, "start < end"),
        ("noise_window", {"window": [0.0, 0.3], "width": 0.5}, "wider than the window"),
        ("guidance_interval", {"interval": [0.0, 1.5]}, "start < end"),
    ],
)
def test_bad_windows_are_errors(section, bad, match):
    from pydantic import ValidationError

    from diffexp.exploration import ExplorationConfig

    with pytest.raises(ValidationError, match=match):
        ExplorationConfig(strategy="sde_window", **{section: bad})
