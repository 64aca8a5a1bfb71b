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
