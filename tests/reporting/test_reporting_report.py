"""The report folder: files, escaping, size, the CLI."""

from __future__ import annotations

import argparse
import re

from benchmark.reporting.cli import add_report_command

XSS = "<script>alert(1)</script>"


def test_report_files(study_report):
    out = study_report.out_dir
    assert (out / "index.html").is_file()
    for key in ("curves_reward_mean", "curves_eval_reward_mean", "diversity", "reward_vs_ground_truth"):
        assert (out / "figures" / f"{key}.png").stat().st_size > 5000
        assert (out / "figures" / f"{key}.svg").read_text().lstrip().startswith("<?xml")
    for name in ("budgets", "efficiency", "auc", "robust", "ablation", "summary"):
        assert (out / "tables" / f"{name}.csv").is_file()
    assert (out / "tables" / "ablation_reward_mean.tex").is_file()
    assert not (out / ".artifacts").exists()


def test_html_escapes_study_strings(study_report):
    page = study_report.html.read_text()
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # run name and config, as text
    assert "<script" not in page.lower()  # the page has no scripts at all
    assert "script-src" not in page and "default-src 'none'" in page  # CSP forbids scripts


def test_html_is_self_contained_and_small(study_report):
    page = study_report.html.read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # only data: URIs and in-page anchors
    assert page.count("data:image/png;base64,") == 4 + 8 * 3  # figures + 3 eval grids per strategy x algorithm
    assert len(page) < 3_000_000


def test_html_sections(study_report):
    page = study_report.html.read_text()
    for text in ("Sample efficiency", "Diversity over training", "Learned reward vs ground truth", "Ablation",
                 "interquartile mean", "Provenance", "package", "seed 0 · 320 queries", "DiffExp", "AlignProp"):
        assert text in page, text
    # FAILED runs are left out of everything, with a note saying so
    assert "left out FAILED run ddpo-diffexp-crashed" in page and page.count("ddpo-diffexp-crashed") == 1


def test_summary_orders_strategies(study_report):
    s = study_report.summary
    assert list(s["Strategy"][:4]) == ["Baseline", "CFG only", "Phrase only", "DiffExp"]
    assert list(s["Algorithm"].unique()) == ["DDPO", "AlignProp"]
    # the synthetic DiffExp learns fastest: fewest queries to the baseline's final reward
    ratios = s[s["Algorithm"] == "DDPO"]["Ratio"].astype(float).tolist()
    assert ratios[0] == 1.0 and ratios[3] == min(ratios)


def test_cli(mlflow_study, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="diffexp")
    add_report_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "bare-report"
    args = parser.parse_args(["report", str(mlflow_study["root"]), "--experiment", "bare", "--out", str(out), "--reps", "100", "--budgets", "15,30"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'index.html'}" in printed
    assert "Strategy" in printed and "Final" in printed
    assert (out / "index.html").is_file()
    assert "No eval images were logged." in (out / "index.html").read_text()
