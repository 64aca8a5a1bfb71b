import numpy as np
import pytest

from diffexp.algorithms.stat_tracker import PerPromptStatTracker, batch_advantages


def test_falls_back_to_batch_statistics_until_min_count():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=3)
    rewards = np.array([1.0, 2.0, 10.0, 20.0])
    adv = tracker.update(["a", "a", "b", "b"], rewards)
    mean, std = rewards.mean(), rewards.std() + 1e-6
    np.testing.assert_allclose(adv, (rewards - mean) / std)


def test_per_prompt_statistics_once_enough():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2)
    adv = tracker.update(["a", "a", "b", "b"], np.array([1.0, 3.0, 10.0, 30.0]))
    np.testing.assert_allclose(adv, [-1, 1, -1, 1], atol=1e-5)  # each prompt: mean 2 / 20, std 1 / 10


def test_buffer_keeps_the_latest_rewards():
    tracker = PerPromptStatTracker(buffer_size=2, min_count=2)
    tracker.update(["a", "a"], np.array([100.0, 200.0]))
    adv = tracker.update(["a", "a"], np.array([1.0, 3.0]))  # buffer now [1, 3]: old rewards forgotten
    np.testing.assert_allclose(adv, [-1, 1], atol=1e-5)


def test_state_round_trip():
    tracker = PerPromptStatTracker(buffer_size=3, min_count=1)
    tracker.update(["a", "b", "a"], np.array([1.0, 2.0, 3.0]))
    clone = PerPromptStatTracker(1, 1)
    clone.load_state_dict(tracker.state_dict())
    np.testing.assert_allclose(clone.update(["a"], np.array([5.0])), tracker.update(["a"], np.array([5.0])))


def test_errors_and_global():
    with pytest.raises(ValueError, match="min_count"):
        PerPromptStatTracker(buffer_size=2, min_count=3)
    with pytest.raises(ValueError, match="rewards"):
        PerPromptStatTracker(4, 1).update(["a"], np.array([1.0, 2.0]))
    np.testing.assert_allclose(batch_advantages(np.array([1.0, 3.0])), [-1, 1], atol=1e-5)


def test_batch_scale_keeps_prompt_means_but_one_pooled_std():
    # prompt a: 1, 3 (mean 2); prompt b: 10, 10.2 (mean 10.1). Centred: -1, 1, -0.1, 0.1;
    # pooled std = sqrt((1 + 1 + 0.01 + 0.01) / 4) = sqrt(0.505).
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2, scale="batch")
    adv = tracker.update(["a", "a", "b", "b"], np.array([1.0, 3.0, 10.0, 10.2]))
    pooled = np.sqrt(0.505)
    np.testing.assert_allclose(adv, np.array([-1, 1, -0.1, 0.1]) / pooled, atol=1e-5)
    # per-prompt scaling would have stretched prompt b's 0.2 difference to the same +-1 as a's
    per_prompt = PerPromptStatTracker(buffer_size=4, min_count=2).update(
        ["a", "a", "b", "b"], np.array([1.0, 3.0, 10.0, 10.2])
    )
    np.testing.assert_allclose(per_prompt, [-1, 1, -1, 1], atol=1e-4)


def test_scale_survives_a_state_round_trip_and_is_validated():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=1, scale="batch")
    clone = PerPromptStatTracker(4, 1)
    clone.load_state_dict(tracker.state_dict())
    assert clone.scale == "batch"
    with pytest.raises(ValueError, match="scale"):
        PerPromptStatTracker(4, 1, scale="group")


def test_global_advantages_use_ddpo_pytorchs_epsilon():
    """(r - mean) / (std + 1e-8), as ddpo-pytorch and TRL: near-constant rewards keep their spread."""
    rewards = np.array([1.0, 1.0 + 2e-7])
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
    np.testing.assert_allclose(batch_advantages(rewards), expected, rtol=1e-12)
    assert abs(batch_advantages(rewards)[1]) > 0.9  # with 1e-6 it would be ~0.09
