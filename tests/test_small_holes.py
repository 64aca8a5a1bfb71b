"""Bad input that used to end in a traceback, a silent misreading or a black image: each is now a
clear error naming the problem (or, for an over-long prompt, a warning with the token count)."""

import io
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from diffexp.cli import main
from diffexp.prompts.weighting import MAX_WEIGHT, PromptSyntaxError, fragments

ROOT = Path(__file__).resolve().parents[1]


def sample(tmp_path, *args) -> list[str]:
    return ["sample", "--pipeline", "tiny-sd15", "--prompt", "a cat", "--steps", "2", *args]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--per-prompt", "0"], "--per-prompt must be at least 1, got 0"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--prompts-file", "{tmp}"], "is not a file; give a text file"),
        (["--exploration-config", "{tmp}/list.yaml"], "must hold a mapping .* got list"),
        (["--exploration-config", "{tmp}/typo.yaml"], r"guidance_scal"),
        (["--out", "{tmp}"], "must be an image file name such as samples.png, not a folder"),
        (["--prompt", "(x)1e309"], "exponent notation is not a weight"),
    ],
)
def test_sample_bad_input_is_a_clear_error_before_sampling(tmp_path, capsys, args, message):
    (tmp_path / "list.yaml").write_text(yaml.safe_dump([1, 2]))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"exploration": {"guidance_scal": 2.0}}))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(sample(tmp_path, *args)) == 2
    err = capsys.readouterr().err
    assert "diffexp sample: error:" in err and "Traceback" not in err
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize(
    "prompt, problem",
    [
        ("(x)1e309", "exponent notation"),
        ("(x)1.5E3 dog", "exponent notation"),
        ("(red circle)99999999999999999999", "above the maximum"),
        ("(((x)10)10)10", "gets weight 1000, above the maximum"),
    ],
)
def test_weights_the_embedding_cannot_take_are_syntax_errors(prompt, problem):
    with pytest.raises(PromptSyntaxError, match=problem):
        fragments(prompt)


def test_weights_up_to_the_maximum_and_words_after_a_weight_still_parse():
    assert fragments(f"(x){MAX_WEIGHT:g}") == [("x", MAX_WEIGHT)]
    assert fragments("(red)1.5 eyes") == [("red", 1.5), ("eyes", 1.0)]
    assert fragments("(red)2 eel") == [("red", 2.0), ("eel", 1.0)]


def test_an_over_long_prompt_warns_with_its_token_count():
    from diffexp.models import get_pipeline
    from diffexp.sampling.conditioning import PromptEncoder

    encoder = PromptEncoder(get_pipeline("tiny-sd15"))
    limit = encoder.pipe.tokenizer.model_max_length
    with pytest.warns(UserWarning, match=rf"prompt of \d+ tokens is cut to the text encoder's {limit}"):
        encoder.encode(["cat " * 2000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["a short prompt"])
        encoder.encode(["cat " * 2000])  # said once per prompt


def test_captions_draw_accents_and_mark_what_the_font_lacks():
    from diffexp.visualize import _caption_font, captioned_grid, drawable

    assert drawable("crème brûlée über") == "crème brûlée über"
    assert drawable("a cat 🎉") == "a cat ?"
    import numpy as np
    from PIL import Image, ImageDraw

    font = _caption_font()[0]

    def render(text):
        image = Image.new("L", (24, 24))
        ImageDraw.Draw(image).text((2, 2), text, font=font, fill=255)
        return np.asarray(image)

    assert not np.array_equal(render("ü"), render("\U0001f389"))  # drawn, not the missing-glyph box
    grid = captioned_grid(torch.zeros(1, 3, 8, 8), ["über 🎉"], ncols=1, cell=64)
    assert grid.size == (64, 64 + 4 * 13 + 6)


def test_a_typo_in_the_objective_metric_fails_the_dry_run(tmp_path):
    from diffexp.harness.cli import dry_run
    from diffexp.harness.study_file import StudyError

    data = yaml.safe_load((ROOT / "experiments" / "ablations" / "tiny_grid.yaml").read_text())
    data["objective"]["metric"] = "eval_reward_maen"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        StudyError, match=r"objective.metric: .* no metric 'eval_reward_maen'; did you mean eval_reward_mean"
    ):
        dry_run(path, run_dir=tmp_path / "rd", out=io.StringIO())
    data["objective"]["metric"] = "eval_reward_mean"
    data["objective"]["intermediate"] = "loss"  # DDPO logs it
    path.write_text(yaml.safe_dump(data))
    assert dry_run(path, run_dir=tmp_path / "rd", out=io.StringIO()) == 0


def test_the_embedded_studies_objectives_are_logged_metrics():
    """The embedded world declares its evaluators' metrics, so the shipped studies are checked."""
    from diffexp.harness.study import load_study

    for path in [ROOT / "diffexp" / "embedded" / "configs" / "embedded_ablation.yaml"]:
        load_study(path).check_objective()


def test_an_over_long_prompt_is_said_in_one_short_line(tmp_path, capfd):
    """The notice names the token count; neither transformers' nor diffusers' repeats the text."""
    long = " ".join(["a red circle above a blue square"] * 60)
    with pytest.warns(UserWarning, match="prompt of 422 tokens is cut"):
        assert main(["sample", "--pipeline", "tiny-sd15", "--prompt", long, "--steps", "1", "--per-prompt", "1",
                     "--out", str(tmp_path / "x.png")]) == 0  # fmt: skip
    err = capfd.readouterr().err
    assert "following part of your input was truncated" not in err and "Token indices" not in err
    assert len(err) < 2000


# -- config and run-directory files ------------------------------------------------------------------
TRAIN = ["model.pretrained=tiny-sd15", "sample.num_steps=2", "sample.batch_size=2", "sample.num_batches_per_epoch=1",
         "train.batch_size=2", "train.gradient_accumulation_steps=1", "prompts.set=list", "prompts.prompts=[a cat]",
         "prompts.eval_options={}", "reward.name=brightness", "run.num_epochs=1", "run.eval_num_prompts=1",
         "run.threads=1", "run.loggers=[csv]"]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe run: {}", "is not UTF-8 text"), (b"", "is empty"), (b"# only a comment\n", "is empty")],
)
def test_an_unreadable_or_empty_config_file_is_named(tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and message in err


def test_bad_tracking_uris_are_one_line_errors(tmp_path, capsys):
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}", "run.mlflow_tracking_uri=bogus://x"]) == 2
    err = capsys.readouterr().err
    assert "no tracking store for the scheme 'bogus'" in err and len(err.strip().splitlines()) <= 3
    assert not (tmp_path / "run").exists()
    study = ROOT / "experiments" / "ablations" / "tiny_grid.yaml"
    assert main(["sweep", str(study), "--run-dir", str(tmp_path / "s"), "--tracking-uri", "bogus://x"]) == 2
    assert "--tracking-uri 'bogus://x'" in capsys.readouterr().err


def test_a_study_path_that_is_a_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["sweep", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a file" in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_at_a_checkpoint_is_a_sentence_and_leaves_no_tmp(tmp_path, capsys, monkeypatch):
    import errno

    import lightning as L

    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}"]) == 0
    folder = tmp_path / "run" / "checkpoints"
    before = (folder / "last.ckpt").read_bytes()

    def full(self, path, weights_only=False, storage_options=None):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(L.Trainer, "save_checkpoint", full)
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}", "run.num_epochs=2"]) == 1
    err = capsys.readouterr().err
    assert "could not write the checkpoint" in err and "No space left on device" in err
    assert "Traceback" not in err
    assert (folder / "last.ckpt").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_what_a_start_or_resume_leaves_behind_is_said(tmp_path, capsys):
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}"]) == 0
    run = tmp_path / "run"
    (run / "csv" / "metrics.csv").unlink()
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}", "run.num_epochs=2"]) == 0
    assert "resuming without" in capsys.readouterr().err
    (run / "checkpoints" / "last.ckpt").unlink()
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}", "run.num_epochs=2"]) == 0
    assert "holds the logs of an earlier attempt but no checkpoint" in capsys.readouterr().err


def test_a_garbled_metrics_table_is_named(tmp_path, capsys):
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}"]) == 0
    table = tmp_path / "run" / "csv" / "metrics.csv"
    table.write_bytes(b"step,reward\nnot a number,1\n")
    assert main(["train", *TRAIN, f"run.output_dir={tmp_path}", "run.num_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "not a metrics table this run wrote" in err


def test_a_report_on_an_empty_store_creates_nothing(tmp_path, capsys):
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is empty: not an MLflow store" in capsys.readouterr().err
    assert (tmp_path / "mlflow.db").stat().st_size == 0
