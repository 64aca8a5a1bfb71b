"""Table numbers against values computed by hand from 2 strategies x 2 seeds x 3-point curves.

The curves (steps 100, 200, 300)::

    baseline seed 0: 0.1 0.3 0.5      diffexp seed 0: 0.2 0.6 0.8
    baseline seed 1: 0.3 0.5 0.7      diffexp seed 1: 0.4 0.8 0.6

By hand:
* at 150 queries: baseline (0.2+0.4)/2 = 0.3, diffexp (0.4+0.6)/2 = 0.5; at 300: 0.6 and 0.7;
  with two seeds the bootstrap means are {a, (a+b)/2, b}, so the 95% interval is [min, max];
* AUC / span over [100, 300]: baseline (60/200 + 100/200)/2 = 0.4, diffexp (110/200 + 130/200)/2 = 0.6;
* baseline's final value 0.6 (mean curve 0.2, 0.4, 0.6) is reached at 300 by the baseline and by
  diffexp's mean curve (0.3, 0.7, 0.7) at 100 + (0.6-0.3)/(0.7-0.3)*100 = 175: ratio 175/300;
* IQM of two finals = their mean; P(diffexp > baseline) = 3/4 (0.8>0.5, 0.8>0.7, 0.6>0.5, 0.6<0.7).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from diffexp.reporting.latex import tex_escape, write_tables
from diffexp.reporting.load import load_results, study_from_frames
from diffexp.reporting.table_display import display_blocks
from diffexp.reporting.tables import build_tables


def _frame(curves: dict, steps) -> pd.DataFrame:
    rows = [
        dict(run_id=f"{st}-{sd}", algorithm="ddpo", strategy=st, seed=str(sd), metric="reward_mean", step=s, value=v)
        for (st, sd), values in curves.items()
        for s, v in zip(steps, values)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hand_tables(hand_curves):
    curves, steps = hand_curves
    study = study_from_frames(_frame(curves, steps))
    return build_tables(study.metrics, reps=4000, seed=0)


def _row(df, **where):
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, where
    return df.iloc[0]


def test_reward_at_budgets_by_hand(hand_tables):
    b = hand_tables.budgets
    # default budgets: 25/50/100% of the common budget 300 -> 75 (before any log: no value), 150, 300
    assert sorted(b["budget"].unique()) == [75.0, 150.0, 300.0]
    assert math.isnan(_row(b, strategy="baseline", budget=75.0)["mean"])
    assert _row(b, strategy="baseline", budget=75.0)["n_runs"] == 0
    for strategy, budget, mean, low, high in [
        ("baseline", 150.0, 0.3, 0.2, 0.4),
        ("diffexp", 150.0, 0.5, 0.4, 0.6),
        ("baseline", 300.0, 0.6, 0.5, 0.7),
        ("diffexp", 300.0, 0.7, 0.6, 0.8),
    ]:
        r = _row(b, strategy=strategy, budget=budget)
        assert (r["mean"], r["ci_low"], r["ci_high"]) == pytest.approx((mean, low, high)), (strategy, budget)


def test_auc_by_hand(hand_tables):
    a = hand_tables.auc
    assert (
        _row(a, strategy="baseline")["auc"],
        _row(a, strategy="baseline")["ci_low"],
        _row(a, strategy="baseline")["ci_high"],
    ) == pytest.approx((0.4, 0.3, 0.5))
    assert (
        _row(a, strategy="diffexp")["auc"],
        _row(a, strategy="diffexp")["ci_low"],
        _row(a, strategy="diffexp")["ci_high"],
    ) == pytest.approx((0.6, 0.55, 0.65))


def test_queries_to_reach_baseline_and_ratio_by_hand(hand_tables):
    e = hand_tables.efficiency
    base, diff = _row(e, strategy="baseline"), _row(e, strategy="diffexp")
    assert base["target"] == pytest.approx(0.6)
    assert base["queries"] == pytest.approx(300.0) and base["ratio"] == pytest.approx(1.0)
    assert diff["queries"] == pytest.approx(175.0)
    assert diff["ratio"] == pytest.approx(175.0 / 300.0)
    assert diff["ci_low"] <= 175.0 <= diff["ci_high"]
    assert diff["ratio_low"] <= diff["ratio"] <= diff["ratio_high"]


def test_iqm_and_probability_of_improvement_by_hand(hand_tables):
    r = hand_tables.robust
    assert _row(r, strategy="baseline")["iqm"] == pytest.approx(0.6)
    assert _row(r, strategy="diffexp")["iqm"] == pytest.approx(0.7)
    assert _row(r, strategy="diffexp")["poi"] == pytest.approx(0.75)
    assert _row(r, strategy="baseline")["poi"] == pytest.approx(0.5)


def test_iqm_trims_outlier_seeds_by_hand():
    # 4 seeds with finals 0.1, 0.5, 0.6, 2.0: IQM drops one each side -> (0.5 + 0.6) / 2
    finals = {("diffexp", k): [0.0, v] for k, v in enumerate([0.1, 0.5, 0.6, 2.0])}
    tables = build_tables(study_from_frames(_frame(finals, [10, 20])).metrics, reps=200)
    assert _row(tables.robust, strategy="diffexp")["iqm"] == pytest.approx(0.55)
    assert _row(tables.ablation, strategy="diffexp")["mean"] == pytest.approx(0.8)


def test_ablation_and_latex(hand_tables, tmp_path):
    ab = hand_tables.ablation
    assert set(ab["budget"]) == {300.0}
    blocks = {k: df for k, _, df in display_blocks(hand_tables)}
    assert {"training_budgets", "training_efficiency", "training_auc", "training_robust", "ablation"} <= set(blocks)
    diff = blocks["ablation"].set_index("Strategy").loc["DiffExp"]
    assert diff.iloc[0] == "0.700 [0.600, 0.800]"
    eff = blocks["training_efficiency"].set_index("Strategy").loc["DiffExp"]
    assert eff["Queries to reach it"].startswith("175 [") and eff["Ratio to baseline"].startswith("0.58 [")
    files = write_tables(hand_tables, tmp_path)
    tex = (tmp_path / "tables" / "ablation.tex").read_text()
    assert "DiffExp & 0.700 [0.600, 0.800]" in tex and r"\toprule" in tex
    csv = pd.read_csv(tmp_path / "tables" / "budgets.csv")
    assert len(csv) == 6 and {p.suffix for p in files} == {".csv", ".tex"}


def test_no_area_under_a_curve_of_one_or_two_points():
    curves = {("baseline", 0): [0.1, 0.2], ("baseline", 1): [0.2, 0.4]}
    tables = build_tables(study_from_frames(_frame(curves, [10, 20])).metrics, reps=100)
    assert tables.auc.empty and "training_auc" not in {k for k, _, _ in display_blocks(tables)}


def test_heldout_budgets_are_the_evaluations():
    rows = [
        dict(
            run_id=f"r{sd}",
            algorithm="ddpo",
            strategy="baseline",
            seed=str(sd),
            metric="eval_reward_mean",
            step=s,
            value=v + sd,
        )
        for sd in (0, 1)
        for s, v in zip([0, 50, 100, 150], [1.0, 1.2, 1.4, 1.5])
    ]
    tables = build_tables(study_from_frames(pd.DataFrame(rows)).metrics, reps=100)
    assert sorted(tables.budgets["budget"]) == [0.0, 50.0, 100.0, 150.0]


def test_tex_escape():
    assert (
        tex_escape("a_b & <script>alert(1)</script> 50%")
        == r"a\_b \& \textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{} 50\%"
    )


def test_same_numbers_through_mlflow(mlflow_study):
    """The hand set logged to MLflow (seed only as the run.seed param, no reward tag) gives the same table."""
    study = load_results(mlflow_study["root"], experiments=["hand"])
    assert sorted(study.runs["seed"]) == ["0", "0", "1", "1"]
    assert set(study.runs["reward"]) == {"reward"}
    tables = build_tables(study.metrics, budgets=[150, 300], reps=2000)
    assert _row(tables.budgets, strategy="diffexp", budget=150.0)["mean"] == pytest.approx(0.5)
    assert _row(tables.efficiency, strategy="diffexp")["queries"] == pytest.approx(175.0)
    assert _row(tables.auc, strategy="baseline")["auc"] == pytest.approx(0.4)
    assert _row(tables.robust, strategy="diffexp")["poi"] == pytest.approx(0.75)
