"""The interleaved peer benchmark's design and statistics, on synthetic timings with a known ratio."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmark" / "peer"))
import interleave  # noqa: E402 (a script folder, importable once on sys.path)


def _ratios(rng: random.Random, n: int, true_ratio: float, sigma: float = 0.05) -> list[float]:
    """n pairs' ratios: lognormal around ``true_ratio``, which is then their distribution's median."""
    return [true_ratio * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def test_the_order_alternates_and_starts_with_a():
    assert interleave.pair_orders(4) == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
    with pytest.raises(ValueError, match="at least 1"):
        interleave.pair_orders(0)


def test_the_range_covers_the_median_ratio_as_often_as_the_sign_test_says():
    rng, n, trials = random.Random(1), 5, 4000
    covered = 0
    for _ in range(trials):
        ratios = _ratios(rng, n, true_ratio=0.93)
        covered += min(ratios) <= 0.93 <= max(ratios)
    expected = interleave.range_level(n)
    assert expected == pytest.approx(0.9375)
    assert abs(covered / trials - expected) < 4 * math.sqrt(expected * (1 - expected) / trials)


def test_the_bootstrap_interval_is_the_range_at_five_pairs_and_near_nominal_beyond():
    rng = random.Random(2)

    def coverage(n: int, trials: int = 400) -> tuple[float, float]:
        hits = same = 0
        for i in range(trials):
            ratios = _ratios(rng, n, 1.04)
            lo, hi = interleave.bootstrap_median_interval(ratios, reps=400, seed=i)
            hits += lo <= 1.04 <= hi
            same += (lo, hi) == (min(ratios), max(ratios))
        return hits / trials, same / trials

    five, six, forty = coverage(5), coverage(6), coverage(40)
    assert five[1] == 1.0  # at 5 pairs the 2.5% and 97.5% points of the bootstrap median are the extremes
    assert six[1] == 0.0 and 0.88 < six[0] < 0.98  # narrower than the range, about nominal (measured 93%)
    assert 0.9 < forty[0] < 0.99


def test_alternating_pairs_cancel_a_linear_drift_that_one_order_would_not():
    """Every call is slower than the last (a machine warming up): with A B / B A pairs the
    median ratio stays at the true one; with A always first it does not."""
    calls = iter(range(1000))

    def side(base: float):
        return lambda: {"s": base * (1.0 + 0.01 * next(calls))}

    pairs = interleave.run_pairs(6, side(1.0), side(1.0), log=lambda m: None)
    alternated = interleave.summarise([p["a"]["s"] / p["b"]["s"] for p in pairs])["median"]
    assert alternated == pytest.approx(1.0, abs=2e-3)
    one_order = [(1.0 + 0.01 * (2 * i)) / (1.0 + 0.01 * (2 * i + 1)) for i in range(6)]
    assert abs(sorted(one_order)[3] - 1.0) > 5e-3
    assert [p["order"] for p in pairs] == ["ab", "ba"] * 3
    assert all("load_before_a" in p and "load_before_b" in p for p in pairs)


def test_the_summary_names_every_figure():
    summary = interleave.summarise([1.0, 1.1, 0.9, 1.05, 0.95, 1.02], reps=200)
    assert summary["pairs"] == 6 and summary["median"] == pytest.approx(1.01)
    assert summary["min"] == 0.9 and summary["max"] == 1.1 and summary["range_level"] == pytest.approx(0.96875)
    assert summary["min"] <= summary["bootstrap_lo"] <= summary["median"] <= summary["bootstrap_hi"] <= summary["max"]
