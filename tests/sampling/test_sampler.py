"""The trajectory sampler: equality with the diffusers pipeline, and exact log-prob replay."""

import pytest
import torch

from diffexp.exploration import build_strategy
from diffexp.prompts.base import Prompt
from diffexp.sampling.plan import SamplingPlan
from diffexp.sampling.trajectory import TrajectorySampler
from tests.helpers import reference_truncated_grads

PROMPTS = ["a cat and a dog", "a red circle above a blue square"]
STEPS = 6


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_baseline_equals_pipeline_output(twin, eta):
    """Same components, seed and CFG: the final image equals the pipeline's (fp32)."""
    reference = twin(
        PROMPTS,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        eta=eta,
        generator=torch.Generator().manual_seed(11),
        output_type="pt",
    ).images
    sampler = TrajectorySampler(twin, num_steps=STEPS, eta=eta)
    plan = build_strategy({"strategy": "baseline", "guidance_scale": 7.5}).plan(PROMPTS, STEPS)
    with torch.no_grad():
        traj = sampler.sample(plan, torch.Generator().manual_seed(11))
    assert (traj.images - reference).abs().max().item() <= 1e-5


def _sample(pipe, strategy, seed=0):
    sampler = TrajectorySampler(pipe, num_steps=STEPS, eta=1.0)
    prompts = [
        Prompt("a monkey washing the dishes", ("monkey", "washing the dishes")),
        "a cat and a dog, watercolor",
    ] * 2
    g = torch.Generator().manual_seed(seed)
    plan = build_strategy(strategy).plan(prompts, STEPS, g)
    with torch.no_grad():
        return sampler, sampler.sample(plan, g)


ALL_STRATEGIES = ["baseline", "cfg", "phrase", "diffexp", "sde_window", "guidance_interval"]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_replayed_log_probs_equal_sampled(twin, strategy):
    """exp(new - old) = 1 at every stochastic step: replay uses the recorded embeddings, CFG scales
    and noise levels; a step the plan made deterministic has no log-probability (NaN) either way."""
    sampler, traj = _sample(twin, strategy)
    assert traj.latents.shape[:2] == (4, STEPS + 1) and traj.log_probs.shape == (4, STEPS)
    stochastic = traj.stochastic_steps()
    if strategy == "sde_window":  # the default: 30% of the steps (2 of 6), adjacent, inside the first half
        assert (stochastic.sum(dim=1) == 2).all() and not stochastic[:, STEPS // 2 :].any()
    if strategy == "guidance_interval":  # the default interval: no guidance on the noisiest 30%
        assert (traj.guidance_scales[:, :2] == 1).all() and (traj.guidance_scales[:, 2:] == 5).all()
    with torch.no_grad():
        for step in range(STEPS):
            new = sampler.step_log_prob(traj, step)
            rows = stochastic[:, step]
            assert torch.isnan(new[~rows]).all() and torch.isnan(traj.log_probs[~rows, step]).all()
            ratio = torch.exp(new[rows] - traj.log_probs[rows, step])
            assert (ratio - 1).abs().max().item() <= 1e-5 if rows.any() else True, (strategy, step)


@pytest.mark.parametrize("strategy", ["baseline", "diffexp"])
def test_replay_under_another_batch_layout(twin, strategy):
    """Training minibatches differ from the sampling batch (subsets, shuffled, per-sample steps).

    float32 kernels may then round differently; the deviation must stay below a tenth of
    DDPO's smallest usual clip range (1e-4), i.e. 1e-5.
    """
    sampler, traj = _sample(twin, strategy)
    worst = 0.0
    with torch.no_grad():
        for order in ([1], [3, 0], [2, 1, 0, 3]):
            sub = traj.select(order)
            steps = torch.randint(0, STEPS, (len(order),), generator=torch.Generator().manual_seed(len(order)))
            new = sampler.step_log_prob(sub, steps)
            old = sub.log_probs[torch.arange(len(order)), steps]
            worst = max(worst, (torch.exp(new - old) - 1).abs().max().item())
    print(f"max |ratio - 1| under re-batching ({strategy}): {worst:.2e}")
    assert worst <= 1e-5


def test_trajectory_records_what_was_sampled(sd15):
    sampler, traj = _sample(sd15, "diffexp", seed=3)
    assert traj.prompts == ["a monkey washing the dishes", "a cat and a dog, watercolor"] * 2  # rewards see these
    assert any("(" in p for p in traj.conditioning_prompts)
    assert traj.guidance_scales.shape == (4, STEPS)
    assert traj.cond.embeds.shape == traj.uncond.embeds.shape == (4, 77, 32)
    assert traj.images.shape == (4, 3, 32, 32) and 0 <= traj.images.min() and traj.images.max() <= 1
    # The recorded conditioning is what the encoder gives for the weighted text.
    again = sampler.encoder.encode(traj.conditioning_prompts)
    torch.testing.assert_close(again.embeds, traj.cond.embeds)


def test_per_sample_guidance_changes_only_that_sample(sd15):
    sampler = TrajectorySampler(sd15, num_steps=STEPS, eta=1.0)
    scales = torch.full((2, STEPS), 5.0)
    a = sampler.sample(SamplingPlan(PROMPTS, PROMPTS, scales), torch.Generator().manual_seed(0))
    scales[1, :2] = 1.0
    b = sampler.sample(SamplingPlan(PROMPTS, PROMPTS, scales), torch.Generator().manual_seed(0))
    assert torch.equal(a.latents[0], b.latents[0])
    assert not torch.allclose(a.latents[1, -1], b.latents[1, -1])


@pytest.mark.parametrize("checkpointing", [True, False])
def test_gradients_flow_only_through_marked_steps(checkpointing):
    """With per-sample suffix masks (K=2 for sample 0, K=1 for sample 1) the LoRA gradient equals
    a reference that restarts each sample, detached, K steps before the end and runs those steps
    with plain diffusers calls (unet + DDIMScheduler.step): earlier steps contribute nothing."""
    from diffexp.models.lora import add_lora
    from diffexp.models.twins import tiny_sd15_pipeline

    pipe = tiny_sd15_pipeline(seed=1)
    params = add_lora(pipe.unet)
    with torch.no_grad():  # make the adapter non-trivial so its gradient is informative
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    steps, scale = 4, 5.0
    sampler = TrajectorySampler(pipe, num_steps=steps, eta=0.0, gradient_checkpointing=checkpointing)
    plan = SamplingPlan(PROMPTS, PROMPTS, torch.full((2, steps), scale))
    mask = torch.tensor([[False, False, True, True], [False, False, False, True]])

    def flat_grad():
        g = torch.cat([p.grad.flatten() for p in params])
        for p in params:
            p.grad = None
        return g

    traj = sampler.sample(plan, torch.Generator().manual_seed(0), grad_steps=mask)
    traj.images.sum().backward()
    ours = flat_grad()
    reference = reference_truncated_grads(pipe, params, traj, [2, 1], scale)
    assert reference.abs().sum() > 0
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-3)
    # Marking every step changes the gradient: the mask is what truncates it.
    traj = sampler.sample(plan, torch.Generator().manual_seed(0), grad_steps=torch.ones(steps, dtype=torch.bool))
    traj.images.sum().backward()
    assert not torch.allclose(flat_grad(), reference, atol=1e-4, rtol=1e-3)


def test_grad_steps_shape_is_checked(sd15):
    sampler = TrajectorySampler(sd15, num_steps=4)
    plan = SamplingPlan(PROMPTS, PROMPTS, torch.full((2, 4), 5.0))
    with pytest.raises(ValueError, match="grad_steps"):
        sampler.sample(plan, grad_steps=torch.ones(3, dtype=torch.bool))
