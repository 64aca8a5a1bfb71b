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
    from diffexp.harness.study import StudyError

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

    for path in [ROOT / "experiments" / "ablations" / "embedded_ablation.yaml"]:
        load_study(path).check_objective()
