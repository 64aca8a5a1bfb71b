"""The paired statistic behind premise (b), against hand-computed counts and exact binomial tails."""

import numpy as np
import pytest

from diffexp.embedded.measurements import paired_presence_change


def test_counts_only_samples_whose_outcome_changed():
    plain = np.array([1, 1, 0, 0, 0, 1, 0, 1], dtype=bool)
    weighted = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    out = paired_presence_change(plain, weighted)
    assert out["gained"] == 3 and out["lost"] == 1  # samples 2, 3, 6 gained; sample 1 lost
    assert out["presence_plain"] == pytest.approx(4 / 8) and out["presence_weighted"] == pytest.approx(6 / 8)
    # two-sided exact test of 3 of 4 discordant pairs: P(X <= 1) + P(X >= 3) = 2 * 5/16
    assert out["mcnemar_p"] == pytest.approx(10 / 16)


def test_one_sided_change_is_significant_and_no_change_is_not():
    plain = np.zeros(20, dtype=bool)
    weighted = plain.copy()
    weighted[:6] = True
    assert paired_presence_change(plain, weighted)["mcnemar_p"] == pytest.approx(2 * 0.5**6)
    assert paired_presence_change(plain, plain)["mcnemar_p"] == 1.0
    # the same rates with the changes cancelling: 3 gained, 3 lost
    swapped = plain.copy()
    swapped[:3] = True
    before = plain.copy()
    before[3:6] = True
    out = paired_presence_change(before, swapped)
    assert (out["gained"], out["lost"]) == (3, 3) and out["mcnemar_p"] == pytest.approx(1.0)
