"""Every command and subcommand of ``diffexp`` is run by a test with minimal real arguments (the
embedded world or the tiny twins): the ones no other test runs are run here, and a check over the
parser fails when a command is added without a test that runs it."""

import json
import re
from pathlib import Path

import pytest

from diffexp.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = ROOT / "experiments" / "ablations" / "tiny_grid.yaml"


def commands() -> list[tuple[str, ...]]:
    """(command,) or (command, action) for every leaf of the parser, plugins' included."""
    out = []
    top = build_parser()._subparsers._group_actions[0].choices
    for name, parser in top.items():
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        out += [(name, action) for action in subs[0].choices] if subs else [(name,)]
    return out


def test_every_command_is_run_by_a_test():
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for command in commands():
        call = r"main\(\s*\[\s*" + r",\s*".join(f'"{re.escape(part)}"' for part in command)
        assert re.search(call, sources), f"no test runs `diffexp {' '.join(command)}` (main([...]))"


@pytest.mark.slow
def test_embedded_evaluate_train_and_ship(tmp_path, monkeypatch, capsys):
    out = tmp_path / "figures.json"
    only = ["--only", "prompt_following", "aesthetic_reward"]
    assert main(["embedded", "evaluate", "--per-prompt", "1", "--steps", "2", *only, "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures) == {"prompt_following", "aesthetic_reward"}
    assert 0 <= figures["prompt_following"]["accuracy_objects_train"] <= 1
    work = tmp_path / "work"
    args = ["--work-dir", str(work), "--stages", "vae", "--vae-steps", "2", "--vae-batch", "2"]
    assert main(["embedded", "train", *args]) == 0
    assert (work / "vae" / "DONE").is_file()
    assert main(["embedded", "train", "--work-dir", str(work), "--vae-steps", "0"]) == 2
    assert "--vae-steps must be at least 1" in capsys.readouterr().err
    assert main(["embedded", "train", "--work-dir", str(work), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    import diffexp.embedded.cli as embedded_cli

    monkeypatch.setattr(embedded_cli, "WEIGHTS_DIR", tmp_path / "weights")  # never the shipped weights
    assert main(["embedded", "ship", "--work-dir", str(work)]) == 2  # only the VAE stage finished
    assert "no finished generator or reward stage" in capsys.readouterr().err


@pytest.mark.slow
def test_ablation_and_report_on_a_tiny_grid(tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    args = ["--study", str(TINY_GRID), "--run-dir", str(run_dir), "--out", str(out), "--workers", "1"]
    assert main(["ablation", *args]) == 0
    assert (out / "index.html").is_file() and (out / "verdict.md").is_file()
    again = tmp_path / "again"
    assert main(["report", str(run_dir), "--out", str(again), "--reps", "50"]) == 0
    assert (again / "index.html").is_file()
    assert main(["report", str(run_dir), "--out", str(again), "--reps", "0"]) == 2
    assert "--reps must be at least 1" in capsys.readouterr().err
