"""File names of what a held-out evaluation writes into ``<run dir>/eval_images/`` (and logs as
MLflow artifacts under the same folder), in one place for the writer and the readers.

* ``queries_<q>.png``: the captioned grid of every evaluation sample (prompt and reward);
* ``samples_<q>.png``: the same samples uncaptioned, in evaluation order, one row of
  ``size`` x ``size`` tiles, so a report can set samples of the same prompt and noise side by side;
* ``prompts.json``: the evaluation prompts in that order (the same at every evaluation).

``<q>`` is the number of reward queries at the evaluation, zero-padded to 8 digits.
"""

from __future__ import annotations

import re
from typing import NamedTuple

EVAL_IMAGE_DIR = "eval_images"
PROMPTS_NAME = "prompts.json"
_PATTERN = re.compile(r"^(queries|samples)_(\d+)\.png$")


class EvalImage(NamedTuple):
    kind: str  # "grid" or "samples"
    queries: int


def grid_name(queries: int) -> str:
    return f"queries_{queries:08d}.png"


def samples_name(queries: int) -> str:
    return f"samples_{queries:08d}.png"


def parse_eval_image(filename: str) -> EvalImage | None:
    """What an evaluation file is, from its name (``None`` for anything else)."""
    match = _PATTERN.match(filename)
    if match is None:
        return None
    return EvalImage("grid" if match.group(1) == "queries" else "samples", int(match.group(2)))
