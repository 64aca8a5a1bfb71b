"""The report folder: files, the verdict, figures without empty panels, no machine paths, escaping, the CLI."""

from __future__ import annotations

import argparse
import re

import pandas as pd
import pytest

from diffexp.reporting.cli import add_report_command
from diffexp.reporting.figures import svg_panels

XSS = "<script>alert(1)</script>"
CURVE_FIGURES = ("heldout_reward", "ground_truth", "diversity", "training_reward")
#: absolute paths of this machine's usual roots, as a reader of a committed report must never see them
MACHINE_PATH = re.compile(r"(?<![\w.+\->~])/(?:tmp|home|root|work|Users|var|private|mnt|opt|srv)/")


def page_text(html: str) -> str:
    """The page's text, unescaped, without its inlined images (base64 could contain anything)."""
    import html as html_module

    return html_module.unescape(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html))


def test_report_files(study_report):
    out = study_report.out_dir
    assert (out / "index.html").is_file()
    for key in CURVE_FIGURES:
        assert (out / "figures" / f"{key}.png").stat().st_size > 5000
        assert (out / "figures" / f"{key}.svg").read_text().lstrip().startswith("<?xml")
    for name in ("verdict", "ground_truth", "budgets", "efficiency", "auc", "robust", "ablation"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
    for name in ("verdict", "ground_truth", "ablation", "heldout_budgets", "training_budgets"):
        assert (out / "tables" / f"{name}.tex").is_file(), name
    assert not (out / "tables" / "summary.csv").exists()
    assert max(len(p.name) for p in (out / "tables").iterdir()) <= 28  # short, stable names
    assert not (out / ".artifacts").exists()


def test_every_panel_of_every_figure_has_data(study_report):
    """Three cells of the 2 x 2 algorithm x task grid: three panels, none empty (one per cell)."""
    for key in CURVE_FIGURES:
        panels = svg_panels(study_report.out_dir / "figures" / f"{key}.svg")
        assert panels and min(panels) >= 2, (key, panels)
    assert len(svg_panels(study_report.out_dir / "figures" / "heldout_reward.svg")) == 3
    assert (
        len(svg_panels(study_report.out_dir / "figures" / "ground_truth.svg")) == 3 * 4
    )  # reward, 2 ground truths, other reward


def test_heldout_curves_start_at_the_base_model_with_six_points(study_report):
    panels = svg_panels(study_report.out_dir / "figures" / "heldout_reward.svg")
    assert min(panels) >= 6
    budgets = pd.read_csv(study_report.out_dir / "tables" / "budgets.csv")
    held = budgets[budgets["metric"] == "eval_reward_mean"]
    for _, part in held.groupby(["algorithm", "task", "strategy"]):
        assert sorted(part["budget"])[0] == 0 and part["budget"].nunique() >= 6


def test_verdict_has_every_cell_and_arm(study_report):
    verdict = pd.read_csv(study_report.out_dir / "tables" / "verdict.csv")
    cells = {
        ("ddpo", "embedded_aesthetic · embedded_objects"),
        ("ddpo", "embedded_alignment · embedded_relations"),
        ("alignprop", "embedded_aesthetic · embedded_objects"),
    }
    assert set(zip(verdict["algorithm"], verdict["task"], verdict["strategy"])) == {
        (a, t, s) for a, t in cells for s in ("baseline", "cfg", "phrase", "diffexp")
    }
    no_learning = verdict[verdict["task"].str.startswith("embedded_alignment")]
    assert not no_learning["baseline_learned"].any()
    assert (
        no_learning[no_learning["strategy"] != "baseline"]["verdict"]
        .str.endswith("queries; no comparison is possible")
        .all()
    )
    learned = verdict[(verdict["algorithm"] == "ddpo") & verdict["task"].str.startswith("embedded_aesthetic")]
    assert learned["baseline_learned"].all()
    # the synthetic DiffExp gains 0.6 against the baseline's 0.3: detected
    assert learned.set_index("strategy").loc["diffexp", "verdict"].startswith("DiffExp higher than the baseline by")


def test_no_machine_paths_in_the_report(study_report, mlflow_study):
    html = study_report.html.read_text()
    text = page_text(html)
    assert str(mlflow_study["root"]) not in text
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)
    assert "store: sqlite:///<study>/mlflow.db" in text
    for table in (study_report.out_dir / "tables").iterdir():
        assert not MACHINE_PATH.search(table.read_text()), table.name


def test_html_escapes_study_strings(study_report):
    page = study_report.html.read_text()
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # run name and config, as text
    assert "<script" not in page.lower()  # the page has no scripts at all
    assert "script-src" not in page and "default-src 'none'" in page  # CSP forbids scripts


def test_html_is_self_contained_and_small(study_report):
    page = study_report.html.read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # only data: URIs and in-page anchors
    assert page.count("data:image/png;base64,") == 4 + 3  # curve figures + one samples figure per cell
    assert len(page) < 3_000_000


def test_html_sections(study_report):
    page = study_report.html.read_text()
    for text in (
        "Verdict",
        "Sample efficiency: reward on the evaluation set",
        "What the learned reward stands for",
        "Diversity of the evaluation samples",
        "Samples: DDPO · aesthetic on single objects",
        "Ablation",
        "interquartile mean",
        "Provenance",
        "package",
        "Detectable Δ",
        "DiffExp",
        "AlignProp",
    ):
        assert text in page, text
    assert page.index('id="verdict"') < page.index('id="figures"')  # the verdict comes first
    # FAILED runs are left out of everything, with a note saying so
    assert "left out FAILED run ddpo-diffexp-crashed" in page and page.count("ddpo-diffexp-crashed") == 1


def test_samples_set_the_base_model_beside_each_strategy(study_report):
    from PIL import Image

    png = study_report.out_dir / "figures" / "samples_ddpo_aesthetic.png"
    with Image.open(png) as image:
        assert image.height > 300  # five rows: the base model and four strategies
    assert study_report.sentences[0].startswith("DDPO · aesthetic on single objects: the baseline learned")


def test_cli(mlflow_study, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="diffexp")
    add_report_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "bare-report"
    args = parser.parse_args(
        [
            "report",
            str(mlflow_study["root"]),
            "--experiment",
            "bare",
            "--out",
            str(out),
            "--reps",
            "100",
            "--budgets",
            "15,30",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'index.html'}" in printed
    assert (out / "index.html").is_file()
    page = (out / "index.html").read_text()
    assert "No evaluation samples were logged." in page and "no evaluation-set reward" in page
    args = parser.parse_args(
        ["report", str(mlflow_study["root"]), "--experiment", "study", "--out", str(tmp_path / "s"), "--reps", "100"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "Verdict (evaluation-set reward" in printed and "Detectable Δ" in printed


def test_a_new_report_leaves_no_file_of_the_old_one(mlflow_study, tmp_path):
    from diffexp.reporting.report import build_report

    out = tmp_path / "r"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "curves_reward_mean.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    build_report(mlflow_study["root"], out=out, experiments=["bare"], reps=50)
    assert not (out / "figures" / "curves_reward_mean.png").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "index.html").is_file()


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_report_leaves_the_previous_one_byte_identical(mlflow_study, tmp_path, monkeypatch):
    """The figures have started (one is written) when the build fails: the old report stays as
    it was, and no half-built folder is left beside it."""
    from diffexp.reporting import figures as figs
    from diffexp.reporting.report import build_report

    out = tmp_path / "r"
    build_report(mlflow_study["root"], out=out, experiments=["bare"], reps=50)
    before = _snapshot(out)
    real = figs.make_figures

    def fail_midway(metrics, out_dir, seed=0):
        real(metrics, out_dir, seed=seed)
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(figs, "make_figures", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(mlflow_study["root"], out=out, experiments=["bare"], reps=50)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    with pytest.raises(ValueError, match="--reps"):
        build_report(mlflow_study["root"], out=out, experiments=["bare"], reps=0)
    assert _snapshot(out) == before


def test_prompts_with_dollars_backslashes_and_braces_are_drawn_literally(tmp_path):
    import numpy as np

    from diffexp.reporting import figures as figs

    prompt = r"a $\bogus$ sign {x} \y"
    tile = np.zeros((8, 8, 3), dtype=np.uint8)
    fig = figs.samples_figure([("DiffExp\nseed 0", [tile])], [prompt], [0])
    saved = figs.save_figure(fig, tmp_path, "samples_x", "", "")
    assert saved.png.stat().st_size > 0
    svg = saved.svg.read_text()
    assert "$" in svg and "bogus" in svg and "{x}" in svg  # as text, not mathtext
