"""The committed main-job reports (``reports/embedded/`` and ``reports/embedded-full/``, what
`make demo` and `make demo PROFILE=full` write and the README quotes) are each a complete answer:
every cell and arm in the verdict, every figure panel with data, every evaluation-set curve
starting at the base model with six points or more, no machine paths, and the README quoting
their verdicts word for word."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from diffexp.reporting.figures import svg_panels
from tests.helpers import load_script
from tests.reporting.test_report import MACHINE_PATH, page_text

QUOTE = load_script("reports/quote_verdict.py")
README, readme_markers = QUOTE.README, QUOTE.readme_markers

REPORTS = Path(__file__).resolve().parents[2] / "reports"
PROFILES = {"default": "embedded", "full": "embedded-full"}
CELLS = {  # (algorithm, task: the reward and the training prompt set with its options)
    ("ddpo", "embedded_aesthetic · embedded_objects(split=train)"),
    ("ddpo", "embedded_alignment · embedded_relations(split=train)"),
    ("alignprop", "embedded_aesthetic · embedded_objects(split=train)"),
    ("alignprop", "embedded_alignment · embedded_relations(split=train)"),
}
STRATEGIES = ("baseline", "cfg", "phrase", "diffexp")


@pytest.fixture(params=sorted(PROFILES))
def profile(request) -> str:
    if not (REPORTS / PROFILES[request.param] / "index.html").is_file():
        pytest.skip(f"no committed {request.param} report")
    return request.param


@pytest.fixture
def report(profile) -> Path:
    return REPORTS / PROFILES[profile]


def test_verdict_covers_the_papers_four_cells_and_every_arm(report):
    verdict = pd.read_csv(report / "tables" / "verdict.csv")
    assert sorted(zip(verdict["algorithm"], verdict["task"], verdict["strategy"])) == sorted(
        (a, t, s) for a, t in CELLS for s in STRATEGIES
    )
    assert (verdict["n_runs"] >= 3).all() and verdict["verdict"].str.len().gt(20).all()


def test_every_figure_panel_has_data(report):
    svgs = sorted((report / "figures").glob("*.svg"))
    curves = [p for p in svgs if not p.name.startswith("samples_")]
    assert {p.stem for p in curves} == {"heldout_reward", "ground_truth", "diversity", "training_reward"}
    for svg in curves:
        panels = svg_panels(svg)
        assert panels and min(panels) >= 2, (svg.name, panels)
    assert len(svg_panels(report / "figures" / "heldout_reward.svg")) == 4
    assert len([p for p in svgs if p.name.startswith("samples_")]) == 4


def test_every_evaluation_set_curve_starts_at_the_base_model_with_six_points(report):
    assert min(svg_panels(report / "figures" / "heldout_reward.svg")) >= 6
    budgets = pd.read_csv(report / "tables" / "budgets.csv")
    held = budgets[budgets["metric"] == "eval_reward_mean"]
    assert {(a, t) for a, t in zip(held["algorithm"], held["task"])} == CELLS
    for key, part in held.groupby(["algorithm", "task", "strategy"]):
        assert sorted(part["budget"])[0] == 0 and part["budget"].nunique() >= 6, key


def test_no_machine_paths(report):
    assert not MACHINE_PATH.search(page_text((report / "index.html").read_text()))
    for table in (report / "tables").iterdir():
        assert not MACHINE_PATH.search(table.read_text()), table.name


def test_readme_quotes_the_verdict(profile, report):
    text = README.read_text()
    start, end = readme_markers(profile)
    quoted = text[text.index(start) + len(start) : text.index(end)].strip()
    assert quoted == (report / "verdict.md").read_text().strip()
    assert f"reports/{PROFILES[profile]}/index.html" in text


def test_a_profile_without_a_committed_report_has_no_verdict_quoted():
    text = README.read_text()
    for profile, folder in PROFILES.items():
        start, end = readme_markers(profile)
        quoted = text[text.index(start) + len(start) : text.index(end)].strip()
        if not (REPORTS / folder / "index.html").is_file():
            assert quoted.startswith("- not yet run"), profile
