"""The peer comparison's rows, table and run-to-run agreement, from synthetic pairs (no TRL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmark"))
import peer_comparison  # noqa: E402 (a script, importable once its folder is on sys.path)


def _rows(scale: float) -> list[dict]:
    row = peer_comparison.paired_row(
        "one DDPO epoch (sample + reward + train) / TRL DDPOTrainer",
        "embedded",
        [10.0 * scale, 10.2 * scale, 9.9 * scale, 10.1 * scale, 10.0 * scale, 10.3 * scale],
        [10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        "s",
        1.00,
        [0.1, 0.2, 2.1],
    )
    row["met"] = row["ratio"] <= row["target"]
    return [row]


def test_a_row_reports_the_median_ratio_its_range_and_the_load():
    (row,) = _rows(1.0)
    assert row["ratio"] == pytest.approx(1.005) and (row["ratio_min"], row["ratio_max"]) == (0.99, 1.03)
    assert row["ratio_pairs"] == 6 and row["ratio_range_level"] == pytest.approx(0.96875)
    assert row["load_max"] == 2.1 and not row["met"]
    text = peer_comparison.table([row])
    assert "1.005 [0.990, 1.030; 96.9%]" in text and "| no |" in text and "| 2.10 |" in text


def test_two_runs_agreement_is_their_relative_difference(tmp_path):
    runs = [{"rows": _rows(1.0)}, {"rows": _rows(1.02)}]
    text = peer_comparison.agreement(runs)
    assert "| 1.005 | 1.025 | 2.0% |" in text
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"runs": runs}))
    sys_argv, sys.argv = sys.argv, ["peer_comparison.py", "--compare", str(path)]
    try:
        peer_comparison.main()
    finally:
        sys.argv = sys_argv
