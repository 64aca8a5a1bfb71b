"""The prompt-weighting parser (text only, no models)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffexp.prompts.weighting import (
    PromptSyntaxError,
    fragments,
    has_weights,
    plain_text,
    split_phrases,
    validate,
    weight_phrases,
)


def test_fragments_follow_compel():
    assert fragments("a (red circle)1.3 above a blue square") == [
        ("a", 1.0),
        ("red circle", 1.3),
        ("above a blue square", 1.0),
    ]
    assert fragments("(cat)++")[0][1] == pytest.approx(1.21)
    assert fragments("(cat)-")[0][1] == pytest.approx(0.9)
    nested = dict(fragments("(a (b)1.2 c)1.5 d"))
    assert nested["b"] == pytest.approx(1.8) and nested["a"] == pytest.approx(1.5) and nested["d"] == 1.0


def test_plain_text_and_has_weights():
    assert plain_text("a (red circle)1.3 above a blue square") == "a red circle above a blue square"
    assert plain_text("a monkey, (washing the dishes)0.8") == "a monkey, washing the dishes"
    assert has_weights("a (cat)1.1") and not has_weights("a cat") and not has_weights("a (cat)1.0")


@pytest.mark.parametrize(
    "prompt, position, problem",
    [
        ("bad (syntax", 4, "never closed"),
        ("a ((b)", 2, "never closed"),
        ("a ) b", 2, "without a matching"),
        ("()1.2", 0, "empty"),
        ("(x)1.3.2", 3, "decimal point"),
    ],
)
def test_syntax_errors_name_the_position(prompt, position, problem):
    with pytest.raises(PromptSyntaxError, match=problem) as info:
        validate(prompt)
    assert info.value.position == position
    assert f"position {position}" in str(info.value)


def test_escaped_parentheses_are_text():
    validate(r"a cat \(the big one")


def test_weight_phrases_wraps_first_occurrence():
    assert (
        weight_phrases("a red circle above a blue square", {"blue square": 1.25})
        == "a red circle above a (blue square)1.2500"
    )
    out = weight_phrases("a monkey washing the dishes", {"monkey": 1.3, "washing the dishes": 0.7})
    assert dict(fragments(out)) == {"a": 1.0, "monkey": 1.3, "washing the dishes": 0.7}
    with pytest.raises(ValueError, match="does not occur"):
        weight_phrases("a cat", {"dog": 1.2})
    with pytest.raises(ValueError, match="finite"):
        weight_phrases("a cat", {"cat": float("nan")})


def test_split_phrases_rule():
    assert split_phrases("a cat and a dog, watercolor") == ["cat", "dog", "watercolor"]
    assert split_phrases("an astronaut with a helmet; the moon") == ["astronaut", "helmet", "moon"]
    assert split_phrases("a cat") == ["cat"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab (),.+-0123456789\\", max_size=30))
def test_any_string_validates_or_raises_syntax_error(text):
    """Malformed input never escapes as a parser traceback: it is valid or a PromptSyntaxError."""
    try:
        validate(text)
    except PromptSyntaxError as err:
        assert 0 <= err.position <= len(text)
        return
    fragments(text)  # valid strings parse


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab Zé_1',\t.", max_size=40))
def test_plain_prompts_skip_the_parser_with_its_result(text):
    """Text without weighting syntax takes a fast path (compel's parser costs ~20 ms a prompt,
    most of a small model's sampling call); it must give exactly what the parser gives."""
    from diffexp.prompts.weighting import _PLAIN, _parsed_fragments

    if _PLAIN.fullmatch(text):
        assert fragments(text) == list(_parsed_fragments(text))


def test_nesting_and_length_are_bounded_before_the_parser_runs():
    """The deepest accepted nesting parses; depth 8 and 200 levels (a RecursionError in compel's
    parser) are refused by the validator, naming the first '(' too deep; so is a weighted prompt
    over the length limit (a plain one of any length is not parsed, so it is accepted)."""
    from diffexp.prompts import weighting
    from diffexp.prompts.weighting import MAX_NESTING, MAX_WEIGHTED_CHARS, PromptSyntaxError, fragments, validate

    deepest = "a " + "(" * MAX_NESTING + "red" + ")" * MAX_NESTING + " cat"
    assert "".join(t for t, _ in fragments(deepest)).replace(" ", "") == "aredcat"
    for depth in (MAX_NESTING + 1, 8, 200):
        prompt = "a " + "(" * depth + "red" + ")" * depth
        with pytest.raises(PromptSyntaxError, match="nested deeper") as err:
            validate(prompt)
        assert err.value.position == 2 + MAX_NESTING
    long = "word " * (MAX_WEIGHTED_CHARS // 5) + "(red)1.2"
    with pytest.raises(PromptSyntaxError, match="limited to") as err:
        validate(long)
    assert err.value.position == MAX_WEIGHTED_CHARS and len(str(err.value)) < 400
    validate("word " * 1000)
    assert weighting.pyparsing.ParserElement._packratEnabled  # compel's grammar backtracks without it
