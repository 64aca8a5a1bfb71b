"""Paired, interleaved timing of two implementations, and what the pairs say.

A machine's speed drifts by more than the differences a peer comparison claims (about +-10%
between two runs two days apart on the reference machine, issue #34). So the two sides run in
pairs, each in a fresh process, one right after the other, and the order alternates between
pairs (A B, B A, A B, ...: a slow spell, or a drift that is linear over a pair, does not favour
one side); each pair gives one ratio, A's time over B's.

What the ratios say: their median; the range, which for n pairs is a distribution-free
confidence interval for the median ratio of level 1 - 2 * 0.5**n (93.8% at 5 pairs, 96.9% at 6:
the sign test's); and a 95% percentile bootstrap interval of the median (resampling pairs). At 5
pairs that bootstrap interval is the range itself; from 6 on it is narrower and covers a little
less often than 95% (measured on lognormal ratios: 93.2% at 6 pairs, 92.7% at 10, 94.4% at 40;
``tests/benchmark/test_interleave.py``). An even number of pairs balances the two orders, so a
drift linear in time cancels in the median. The load average before each process is recorded: the
benchmark alone keeps it near its thread count (2 on the reference machine); more means something
else was running.
"""

from __future__ import annotations

import os
import random
import statistics
from collections.abc import Callable


def pair_orders(pairs: int) -> list[tuple[str, str]]:
    """The order of the two sides in each pair: ("a", "b"), ("b", "a"), ("a", "b"), ..."""
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    return [("a", "b") if i % 2 == 0 else ("b", "a") for i in range(pairs)]


def range_level(n: int) -> float:
    """Coverage of [min, max] of n independent ratios for their median (continuous distribution)."""
    return 1.0 - 2.0 * 0.5**n


def bootstrap_median_interval(
    values: list[float], level: float = 0.95, reps: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (resampled with replacement)."""
    if not values:
        raise ValueError("no values")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(reps))
    tail = (1.0 - level) / 2.0
    return medians[int(tail * (reps - 1))], medians[int((1.0 - tail) * (reps - 1))]


def summarise(ratios: list[float], reps: int = 4000, seed: int = 0) -> dict[str, float]:
    """Median ratio, its range (with the range's level) and a 95% bootstrap interval."""
    lo, hi = bootstrap_median_interval(ratios, reps=reps, seed=seed)
    return {
        "pairs": len(ratios),
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "range_level": range_level(len(ratios)),
        "bootstrap_lo": lo,
        "bootstrap_hi": hi,
    }


def load_average() -> float:
    """The machine's 1-minute load average (processes running or waiting for a core)."""
    return os.getloadavg()[0]


def run_pairs(
    pairs: int, side_a: Callable[[], dict], side_b: Callable[[], dict], log: Callable[[str], None] = print
) -> list[dict]:
    """Run ``pairs`` pairs in alternating order; each entry holds both sides' results and the load
    average before each side started."""
    out = []
    for i, order in enumerate(pair_orders(pairs)):
        entry: dict = {"order": "".join(order)}
        for side in order:
            entry[f"load_before_{side}"] = load_average()
            entry[side] = (side_a if side == "a" else side_b)()
        log(f"  pair {i + 1}/{pairs} ({entry['order']}) done")
        out.append(entry)
    return out
