import subprocess
import sys

from PIL import Image

from diffexp.cli import main


def test_sample_writes_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    code = main(
        [
            "sample",
            "--pipeline",
            "embedded",
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
    code = main(
        [
            "sample",
            "--pipeline",
            "tiny-sd15",
            "--prompt",
            "a cat",
            "--strategy",
            "nope",
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2
    assert "unknown exploration strategy 'nope'" in capsys.readouterr().err


def test_bad_prompt_syntax_is_a_clear_error(tmp_path, capsys):
    code = main(
        ["sample", "--pipeline", "tiny-sd15", "--prompt", "a (cat", "--steps", "2", "--out", str(tmp_path / "x.png")]
    )
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


import pytest  # noqa: E402


@pytest.mark.parametrize("pipeline", ["tiny-sd3", "tiny-flux"])
def test_sample_and_strategy_grids_on_flow_models(tmp_path, pipeline):
    """Flow models sample from the command line as they train (the flow sampler, not DDIM's)."""
    out = tmp_path / "x.png"
    args = ["--prompt", "a red circle", "--strategy", "diffexp", "--steps", "2", "--per-prompt", "2"]
    assert main(["sample", "--pipeline", pipeline, *args, "--out", str(out)]) == 0
    assert Image.open(out).size[0] == 2 * 160
    grids = tmp_path / "grids"
    assert (
        main(["strategy-grids", "--pipeline", pipeline, "--steps", "2", "--per-prompt", "1", "--out-dir", str(grids)])
        == 0
    )
    assert sorted(p.name for p in grids.iterdir()) == [
        f"samples_{s}.png" for s in sorted(["baseline", "cfg", "phrase", "diffexp"])
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eta", "7"], "--eta must be between 0 and 1"),
        (["--device", "cuda"], "no CUDA device"),
        (["--device", "nonsense"], "is not a torch device"),
    ],
)
def test_sample_refuses_bad_noise_and_devices_before_loading(tmp_path, capsys, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert (
        main(["sample", "--pipeline", "tiny-sd15", "--prompt", "a cat", *args, "--out", str(tmp_path / "x.png")]) == 2
    )
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
