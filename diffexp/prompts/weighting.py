"""Prompt-weighting syntax: parse, validate, strip and write compel's ``(phrase)1.3`` notation.

This module only handles *text*. Turning weighted text into embeddings is
``diffexp.sampling.conditioning`` (via the ``compel`` library), so the syntax can be tested
without any model. Supported syntax is compel's: ``(words)1.3`` sets a weight, ``(words)+`` /
``(words)-`` multiply by 1.1 / 0.9 per sign, parentheses nest (weights multiply).

compel's own parser is lenient (an unbalanced ``(`` silently becomes literal text), so
:func:`validate` first rejects malformed strings with an error that names the position.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pyparsing
from compel.prompt_parser import PromptParser

# Memoised parsing (pyparsing's packrat, which matplotlib's mathtext switches on too): without it
# compel's grammar backtracks exponentially in nesting depth (3.5x per level; depth 8 took minutes).
pyparsing.ParserElement.enable_packrat()

_WEIGHT = re.compile(r"\)(?:[+-]+|\d+(?:\.\d+)?|\.\d+)?")
_MALFORMED_NUMBER = re.compile(r"\)\d*\.\d*\.")
_EXPONENT = re.compile(r"\)(?:\d+(?:\.\d*)?|\.\d+)[eE][+-]?\d")
_NUMBER = re.compile(r"\)(\d+(?:\.\d+)?|\.\d+)")
#: the largest weight of a fragment (nested weights multiply): far beyond any useful emphasis, and
#: far below what overflows the embedding (1e20 made every pixel NaN)
MAX_WEIGHT = 100.0
#: the deepest nesting of groups: deep enough for any emphasis, shallow enough for compel's recursive
#: parser (200 levels end in RecursionError)
MAX_NESTING = 6
#: the longest prompt with weighting syntax: compel's parse time grows with the length
MAX_WEIGHTED_CHARS = 1000


class PromptSyntaxError(ValueError):
    """A prompt-weighting string is malformed; ``position`` is the 0-based character offset."""

    def __init__(self, prompt: str, position: int, problem: str):
        self.prompt, self.position, self.problem = prompt, position, problem
        start = max(0, position - 60)  # a window around the position: a long prompt is not repeated whole
        tail = "..." if position + 60 < len(prompt) else ""
        shown = ("..." if start else "") + prompt[start : position + 60] + tail
        pointer = " " * (position - start + (3 if start else 0)) + "^"
        super().__init__(f"prompt weighting syntax: {problem} at position {position}:\n  {shown}\n  {pointer}")


def validate(prompt: str) -> None:
    """Raise :class:`PromptSyntaxError` on unbalanced parentheses or malformed weights."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if len(prompt) > MAX_WEIGHTED_CHARS and not _PLAIN.fullmatch(prompt):
        raise PromptSyntaxError(
            prompt,
            MAX_WEIGHTED_CHARS,
            f"a prompt with weighting syntax is limited to {MAX_WEIGHTED_CHARS} characters (it has {len(prompt)})",
        )
    open_positions: list[int] = []
    escaped = False
    for i, ch in enumerate(prompt):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            open_positions.append(i)
            if len(open_positions) > MAX_NESTING:
                raise PromptSyntaxError(prompt, i, f"groups nested deeper than {MAX_NESTING} levels")
        elif ch == ")":
            if not open_positions:
                raise PromptSyntaxError(prompt, i, "')' without a matching '('")
            start = open_positions.pop()
            if not prompt[start + 1 : i].strip():
                raise PromptSyntaxError(prompt, start, "empty weighted group '()'")
            if _MALFORMED_NUMBER.match(prompt, i):
                raise PromptSyntaxError(prompt, i + 1, "malformed weight (more than one decimal point)")
            if _EXPONENT.match(prompt, i):
                raise PromptSyntaxError(prompt, i + 1, "exponent notation is not a weight; write a plain number")
            number = _NUMBER.match(prompt, i)
            if number and float(number.group(1)) > MAX_WEIGHT:
                raise PromptSyntaxError(prompt, i + 1, f"weight {number.group(1)} is above the maximum {MAX_WEIGHT:g}")
    if open_positions:
        raise PromptSyntaxError(prompt, open_positions[-1], "'(' is never closed")


#: Text with none of compel's syntax characters, which compel returns as one fragment of weight 1
#: with its whitespace collapsed (tests/prompts/test_weighting.py checks this against the parser).
_PLAIN = re.compile(r"[\w' ]*")


def fragments(prompt: str) -> list[tuple[str, float]]:
    """``"a (red circle)1.3 above"`` -> ``[("a", 1.0), ("red circle", 1.3), ("above", 1.0)]``."""
    if not isinstance(prompt, str):
        validate(prompt)  # raises the TypeError that names the problem
    if _PLAIN.fullmatch(prompt):
        return [(" ".join(prompt.split()), 1.0)]  # compel's pyparsing parser costs ~20 ms a prompt
    return list(_parsed_fragments(prompt))


@lru_cache(maxsize=4096)
def _parsed_fragments(prompt: str) -> tuple[tuple[str, float], ...]:
    validate(prompt)
    conjunction = PromptParser().parse_conjunction(prompt)
    if len(conjunction.prompts) != 1 or not hasattr(conjunction.prompts[0], "children"):
        raise PromptSyntaxError(prompt, 0, "blends and conjunctions (.blend(), .and()) are not supported")
    out = tuple((f.text, float(f.weight)) for f in conjunction.prompts[0].children)
    for text, weight in out:
        if not weight <= MAX_WEIGHT:  # nested groups multiply
            raise PromptSyntaxError(prompt, 0, f"{text!r} gets weight {weight:g}, above the maximum {MAX_WEIGHT:g}")
    return out


def plain_text(prompt: str) -> str:
    """The prompt without weighting syntax: what a reward model should see."""
    return " ".join(text for text, _ in fragments(prompt) if text)


def has_weights(prompt: str) -> bool:
    """Whether any fragment carries a weight other than 1."""
    return any(abs(w - 1.0) > 1e-12 for _, w in fragments(prompt))


def format_weight(weight: float) -> str:
    """Weights are written with 4 decimals: the text is the record of what was sampled."""
    if not (weight >= 0.0) or weight == float("inf"):
        raise ValueError(f"phrase weight must be a finite number >= 0, got {weight}")
    return f"{weight:.4f}"


def weight_phrases(prompt: str, weights: dict[str, float]) -> str:
    """Wrap the first occurrence of each phrase in ``(phrase)w``.

    Phrases are matched in the text as written (outside existing groups or inside them; nesting
    multiplies weights as compel defines). An absent phrase is an error, not a silent no-op.
    """
    validate(prompt)
    out = prompt
    for phrase, weight in weights.items():
        index = out.find(phrase)
        if not phrase.strip() or index < 0:
            raise ValueError(f"phrase {phrase!r} does not occur in prompt {prompt!r}")
        out = f"{out[:index]}({phrase}){format_weight(weight)}{out[index + len(phrase) :]}"
    return out


_SPLIT = re.compile(r"\s*(?:[,;]|\band\b|\bwith\b)\s*", flags=re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the|some)\s+", flags=re.IGNORECASE)


def split_phrases(prompt: str) -> list[str]:
    """Fallback phrase rule for free text: split at commas, semicolons, "and" and "with".

    Each piece loses a leading article ("a", "an", "the", "some"); empty pieces are dropped.
    ``"a cat and a dog, watercolor"`` -> ``["cat", "dog", "watercolor"]``. Structured prompts
    (such as "a {animal} {activity}") carry their phrases explicitly and do not use this rule.
    """
    text = plain_text(prompt)
    pieces = (_ARTICLE.sub("", piece.strip()).strip() for piece in _SPLIT.split(text))
    return [p for p in pieces if p]
