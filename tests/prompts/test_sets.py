"""Prompt sets: counts, phrases, DrawBench categories, prompt files, the registry and packaged data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import diffexp
from diffexp.prompts import sets
from diffexp.prompts.sets import PROMPT_SETS, drawbench, from_file, get_prompts

DRAWBENCH_COUNTS = {
    "Colors": 25,
    "Conflicting": 10,
    "Counting": 19,
    "DALL-E": 20,
    "Descriptions": 20,
    "Gary Marcus et al.": 10,
    "Misspellings": 10,
    "Positional": 20,
    "Rare Words": 7,
    "Reddit": 38,
    "Text": 21,
}


def test_simple_animals():
    prompts = get_prompts("simple_animals")
    assert len(prompts) == 45 == len({p.text for p in prompts})
    assert prompts[0].text == "cat" and all(p.phrases == (p.text,) for p in prompts)


def test_nouns_activities():
    prompts = get_prompts("nouns_activities")
    assert len(prompts) == 135 == len({p.text for p in prompts})
    assert "a monkey washing the dishes" in {p.text for p in prompts}
    assert {p.text for p in prompts if p.text.startswith("an ")} == {
        "an ant washing the dishes",
        "an ant riding a bike",
        "an ant playing chess",
    }
    for prompt in prompts:
        animal, activity = prompt.phrases
        assert animal in prompt.text and prompt.text.endswith(activity)
    assert Counter(p.phrases[1] for p in prompts) == {
        "washing the dishes": 45,
        "riding a bike": 45,
        "playing chess": 45,
    }


def test_drawbench_counts_and_filter():
    prompts = drawbench()
    assert len(prompts) == 200 and prompts[0].text == "A red colored car."
    assert Counter(p.metadata["category"] for p in prompts) == DRAWBENCH_COUNTS
    assert len(get_prompts("drawbench", category="rare words")) == 7
    assert len(drawbench(["COLORS", "text"])) == 46
    with pytest.raises(ValueError, match="valid: .*'Colors'.*'Text'"):
        drawbench("Colours")


def test_from_file_txt_and_csv(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n")
    assert [p.text for p in from_file(txt)] == ["a cat", "a dog"]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('prompt,category\n"a cat, sleeping",animals\na car,\n')
    prompts = get_prompts("file", path=csv_file)
    assert [p.text for p in prompts] == ["a cat, sleeping", "a car"]
    assert prompts[0].metadata == {"category": "animals"} and prompts[1].metadata == {}


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompts"):
        from_file(tmp_path / "empty.txt")
    (tmp_path / "bad.csv").write_text("text\na cat\n")
    with pytest.raises(ValueError, match="no 'prompt' column; columns: \\['text'\\]"):
        from_file(tmp_path / "bad.csv")
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(ValueError, match=".txt or .csv"):
        from_file(tmp_path / "p.json")


def test_registry():
    with pytest.raises(ValueError, match="registered: .*drawbench.*simple_animals"):
        get_prompts("animals")
    assert {"simple_animals", "nouns_activities", "drawbench", "file", "embedded_objects", "embedded_relations"} <= set(
        PROMPT_SETS
    )


def test_embedded_world_sets():
    train = get_prompts("embedded_relations", split="train")
    heldout = get_prompts("embedded_relations", split="heldout")
    assert train and heldout and not {p.text for p in train} & {p.text for p in heldout}
    assert all(p.phrases and all(ph in p.text for ph in p.phrases) for p in train + heldout)
    assert get_prompts("embedded_objects")[0].metadata["split"] == "train"


def test_data_ships_with_the_package():
    package = Path(diffexp.__file__).parent
    data = Path(str(sets.DATA))
    assert data == package / "prompts" / "data"
    for name in ("simple_animals.txt", "activities.txt", "drawbench.csv"):
        assert (data / name).is_file()
        shared = package.parents[1] / "shared" / "data" / name
        if shared.exists():  # the packaged copy is the public data, unchanged
            assert (data / name).read_bytes() == shared.read_bytes()
    assert "shared" not in Path(sets.__file__).read_text()
