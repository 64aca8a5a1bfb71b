import subprocess
import sys

from PIL import Image

from diffexp.cli import main


def test_sample_writes_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    code = main(
        [
            "sample",
            "--prompt",
            "a red circle",
            "--prompt",
            "a cat and a dog",
            "--strategy",
            "diffexp",
            "--per-prompt",
            "3",
            "--steps",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    image = Image.open(out)
    assert image.size[0] == 3 * 160 and image.size[1] > 2 * 160  # 2 rows of images plus captions


def test_bad_strategy_is_a_clear_error(tmp_path, capsys):
    code = main(["sample", "--prompt", "a cat", "--strategy", "nope", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "unknown exploration strategy 'nope'" in capsys.readouterr().err


def test_bad_prompt_syntax_is_a_clear_error(tmp_path, capsys):
    code = main(["sample", "--prompt", "a (cat", "--steps", "2", "--out", str(tmp_path / "x.png")])
    assert code == 2
    assert "position 2" in capsys.readouterr().err


def test_help_runs():
    result = subprocess.run([sys.executable, "-m", "diffexp", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "sample" in result.stdout


def test_commands_of_the_library_and_of_plugins_are_listed():
    from diffexp.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"sample", "strategy-grids", "train", "ablation", "sweep", "report"} <= commands
    assert "embedded" in commands  # added by the embedded world's `diffexp.commands` entry point
    assert "demo" in commands  # the old name of strategy-grids, kept for one release


def test_the_old_demo_name_says_what_it_is_now(tmp_path, capsys, monkeypatch):
    import diffexp.cli as cli

    monkeypatch.setattr(cli, "render_grid", lambda *args, **kwargs: None)
    assert main(["demo", "--pipeline", "tiny-sd15", "--out-dir", str(tmp_path)]) == 0
    assert "`diffexp demo` is now `diffexp strategy-grids`" in capsys.readouterr().err
    assert main(["strategy-grids", "--pipeline", "tiny-sd15", "--out-dir", str(tmp_path)]) == 0
    assert "is now" not in capsys.readouterr().err
