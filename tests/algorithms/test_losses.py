"""The PPO-clip loss and AlignProp's reward loss against independent references."""

import math

import numpy as np
import pytest
import torch

from diffexp.algorithms.losses import ppo_clip_loss, reward_loss


def reference_ppo(log_prob, old, adv, clip, adv_max):
    """Element by element, straight from the PPO paper's L^CLIP (negated, as a loss)."""
    total, kl, clipped = 0.0, 0.0, 0
    for lp, o, a in zip(log_prob, old, adv):
        a = min(max(a, -adv_max), adv_max)
        r = math.exp(lp - o)
        r_clip = min(max(r, 1 - clip), 1 + clip)
        total += -min(a * r, a * r_clip)
        kl += 0.5 * (lp - o) ** 2
        clipped += abs(r - 1) > clip
    n = len(adv)
    return total / n, kl / n, clipped / n


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n, clip = 64, 0.2
    old = rng.normal(size=n)
    log_prob = old + rng.normal(scale=0.3, size=n)
    adv = rng.normal(scale=4, size=n)
    loss, info = ppo_clip_loss(torch.tensor(log_prob), torch.tensor(old), torch.tensor(adv), clip, 5.0)
    ref_loss, ref_kl, ref_frac = reference_ppo(log_prob, old, adv, clip, 5.0)
    assert loss.item() == pytest.approx(ref_loss, abs=1e-10)
    assert info["approx_kl"].item() == pytest.approx(ref_kl, abs=1e-12)
    assert info["clipfrac"].item() == pytest.approx(ref_frac)


def test_gradient_is_zero_where_clipping_binds():
    """Positive advantage above 1+eps, or negative advantage below 1-eps: no gradient (the trust region)."""
    clip = 0.1
    old = torch.zeros(4, dtype=torch.float64)
    log_prob = torch.tensor(
        [math.log(1.5), math.log(0.5), math.log(1.05), math.log(0.5)], dtype=torch.float64, requires_grad=True
    )
    adv = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    loss, _ = ppo_clip_loss(log_prob, old, adv, clip, 5.0)
    loss.backward()
    grad = log_prob.grad
    assert grad[0] == 0 and grad[1] == 0  # clipped sides
    # unclipped: d/dlp of -A * exp(lp - old) / n
    assert grad[2].item() == pytest.approx(-1.0 * 1.05 / 4)
    assert grad[3].item() == pytest.approx(
        -1.0 * 0.5 / 4
    )  # ratio below 1-eps with A>0 is not clipped (pessimistic bound)


def test_ratio_one_gives_policy_gradient():
    """At ratio 1 the loss is -mean(A) and its gradient is the REINFORCE gradient -A/n."""
    lp = torch.zeros(3, requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 7.0])
    loss, info = ppo_clip_loss(lp, torch.zeros(3), adv, 1e-4, 5.0)
    loss.backward()
    assert loss.item() == pytest.approx(-(1 - 2 + 5) / 3)  # 7 clipped to 5
    torch.testing.assert_close(lp.grad, -torch.tensor([1.0, -2.0, 5.0]) / 3)
    assert info["clipfrac"].item() == 0 and info["ratio"].item() == 1


def test_reward_loss():
    r = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = reward_loss(r, 2.0)
    loss.backward()
    assert loss.item() == -4.0
    torch.testing.assert_close(r.grad, torch.tensor([-1.0, -1.0]))


def test_weights_scale_each_samples_term():
    rng = np.random.default_rng(7)
    old = rng.normal(size=16)
    log_prob, adv, w = old + rng.normal(scale=0.1, size=16), rng.normal(scale=3, size=16), rng.uniform(0.2, 3, size=16)
    loss, _ = ppo_clip_loss(torch.tensor(log_prob), torch.tensor(old), torch.tensor(adv), 0.05, 5.0, torch.tensor(w))
    terms = [reference_ppo([lp], [o], [a], 0.05, 5.0)[0] for lp, o, a in zip(log_prob, old, adv)]
    assert loss.item() == pytest.approx(float(np.mean(np.array(terms) * w)), abs=1e-10)


# -- GRPO (a building block of issue 27; the algorithm itself is not here yet) -----------------
def reference_group_advantages(rewards, groups, global_std, eps):
    """Straight from the definition: (r - mean of its group) / (std of its group, or of all, + eps)."""
    out = []
    all_mean = sum(rewards) / len(rewards)
    all_std = math.sqrt(sum((r - all_mean) ** 2 for r in rewards) / len(rewards))
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        mean = sum(members) / len(members)
        std = all_std if global_std else math.sqrt(sum((x - mean) ** 2 for x in members) / len(members))
        out.append((r - mean) / (std + eps))
    return out


@pytest.mark.parametrize("global_std", [False, True])
def test_group_advantages_match_the_definition(global_std):
    from diffexp.algorithms.losses import group_advantages

    rng = np.random.default_rng(3)
    rewards, groups = rng.normal(size=24) * 3 + 1, rng.integers(0, 4, size=24)
    got = group_advantages(torch.tensor(rewards), torch.tensor(groups), global_std=global_std)
    want = reference_group_advantages(rewards.tolist(), groups.tolist(), global_std, 1e-4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_one_group_is_ddpos_batch_normalisation():
    from diffexp.algorithms.losses import group_advantages
    from diffexp.algorithms.stat_tracker import batch_advantages

    rewards = np.random.default_rng(0).normal(size=16)
    got = group_advantages(torch.tensor(rewards), torch.zeros(16, dtype=torch.long), eps=1e-8)
    np.testing.assert_allclose(got.numpy(), batch_advantages(rewards), rtol=1e-6, atol=1e-6)


def test_grpo_loss_is_ppo_plus_beta_times_the_gaussian_kl():
    from diffexp.algorithms.losses import gaussian_kl, grpo_loss

    rng = np.random.default_rng(5)
    n, clip, beta = 32, 0.2, 0.04
    old = rng.normal(size=n)
    log_prob = old + rng.normal(scale=0.3, size=n)
    adv = rng.normal(scale=2, size=n)
    mean, ref, std = rng.normal(size=(n, 2, 3, 3)), rng.normal(size=(n, 2, 3, 3)), rng.uniform(0.1, 1.0, size=n)
    kl_ref = [float(((m - r) ** 2).mean() / (2 * s**2)) for m, r, s in zip(mean, ref, std)]
    ppo_ref, _, frac_ref = reference_ppo(log_prob, old, adv, clip, 5.0)
    kl = gaussian_kl(torch.tensor(mean), torch.tensor(ref), torch.tensor(std))
    np.testing.assert_allclose(kl.numpy(), kl_ref, rtol=1e-12)
    lp = torch.tensor(log_prob, requires_grad=True)
    loss, info = grpo_loss(lp, torch.tensor(old), torch.tensor(adv), clip, 5.0, kl=kl, beta=beta)
    assert loss.item() == pytest.approx(ppo_ref + beta * sum(kl_ref) / n, abs=1e-10)
    assert info["clipfrac"].item() == pytest.approx(frac_ref) and info["kl"].item() == pytest.approx(sum(kl_ref) / n)
    loss.backward()
    # the gradient of the KL-free part is the surrogate's, by finite differences of the reference
    h = 1e-6
    for i in range(3):
        bumped = log_prob.copy()
        bumped[i] += h
        numeric = (reference_ppo(bumped, old, adv, clip, 5.0)[0] - ppo_ref) / h
        assert lp.grad[i].item() == pytest.approx(numeric, abs=1e-4)
    with_zero_beta, _ = grpo_loss(torch.tensor(log_prob), torch.tensor(old), torch.tensor(adv), clip, 5.0, kl, 0.0)
    assert with_zero_beta.item() == pytest.approx(ppo_ref, abs=1e-10)  # DDPO's loss
    # the KL term's gradient with respect to the policy's mean: beta / n * (mean - ref) / (std^2 * elements)
    mean_t = torch.tensor(mean, requires_grad=True)
    kl_t = gaussian_kl(mean_t, torch.tensor(ref), torch.tensor(std))
    loss, _ = grpo_loss(torch.tensor(log_prob), torch.tensor(old), torch.tensor(adv), clip, 5.0, kl=kl_t, beta=beta)
    loss.backward()
    elements = mean[0].size
    expected = beta / n * (mean - ref) / (std.reshape(-1, 1, 1, 1) ** 2 * elements)
    np.testing.assert_allclose(mean_t.grad.numpy(), expected, rtol=1e-10, atol=1e-14)
