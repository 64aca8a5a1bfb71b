"""``reports/quote_verdict.py``, the Makefile step after ``diffexp ablation``: it rewrites the
README's block for one profile's verdict and nothing else."""

from __future__ import annotations

from tests.helpers import load_script

QUOTE = load_script("reports/quote_verdict.py")


def test_the_readme_block_is_replaced_and_nothing_else(tmp_path):
    start, end = QUOTE.readme_markers("default")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\n- old verdict\n{end}\noutro\n")
    assert QUOTE.update_readme(readme, "- new verdict\n")
    assert readme.read_text() == f"intro\n{start}\n- new verdict\n{end}\noutro\n"
    assert not QUOTE.update_readme(readme, "- new verdict\n")  # unchanged: nothing written
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no block here\n")
    assert not QUOTE.update_readme(plain, "- x\n") and plain.read_text() == "no block here\n"


def test_each_quoted_profile_has_its_own_block(tmp_path):
    (d0, d1), (f0, f1) = QUOTE.readme_markers("default"), QUOTE.readme_markers("full")
    assert "reports/embedded-full/verdict.md" in f0 and {d0, d1}.isdisjoint({f0, f1})
    readme = tmp_path / "README.md"
    readme.write_text(f"{d0}\n- default\n{d1}\n{f0}\n- full\n{f1}\n")
    assert QUOTE.update_readme(readme, "- new full\n", "full")
    assert readme.read_text() == f"{d0}\n- default\n{d1}\n{f0}\n- new full\n{f1}\n"


def test_the_command_quotes_a_profiles_report_and_skips_quick(tmp_path, monkeypatch, capsys):
    start, end = QUOTE.readme_markers("full")
    readme = tmp_path / "README.md"
    readme.write_text(f"{start}\n- not yet run\n{end}\n")
    monkeypatch.setattr(QUOTE, "report_dir", lambda profile: tmp_path / f"reports-{profile}")
    assert QUOTE.main(["--profile", "full", "--readme", str(readme)]) == 2  # no report yet
    assert "make demo PROFILE=full" in capsys.readouterr().err
    (tmp_path / "reports-full").mkdir()
    (tmp_path / "reports-full" / "verdict.md").write_text("- the full verdict\n")
    assert QUOTE.main(["--profile", "full", "--readme", str(readme)]) == 0
    assert readme.read_text() == f"{start}\n- the full verdict\n{end}\n"
    assert QUOTE.main(["--profile", "quick", "--readme", str(readme)]) == 0  # a smoke test is never quoted
    assert readme.read_text() == f"{start}\n- the full verdict\n{end}\n"


def test_the_makefile_quotes_the_verdict_after_the_main_job():
    makefile = (QUOTE.ROOT / "Makefile").read_text()
    demo = makefile[makefile.index("demo: venv") :].split("\n\n")[0]
    assert demo.index("diffexp ablation") < demo.index("reports/quote_verdict.py --profile $(PROFILE)")
