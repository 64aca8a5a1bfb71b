"""Prompt sets by name: DDPO's animals and animal-activity prompts, DrawBench and text files;
plugins register theirs (the embedded world's) with :func:`register_prompt_set`.

The data ships inside the package (``diffexp/prompts/data``, see its README for sources), so
nothing is read from outside the installed package at run time. Structured sets carry their
phrases (for phrase-weighted exploration); DrawBench prompts carry their ``category``.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from diffexp.prompts.base import Prompt
from diffexp.registry import Registry

DATA = importlib.resources.files("diffexp.prompts") / "data"

PromptSetFactory = Callable[..., list[Prompt]]
PROMPT_SETS: Registry[PromptSetFactory] = Registry("prompt set")


def register_prompt_set(name: str, *, label: str | None = None, heldout_options: dict | None = None):
    """Decorator registering a factory ``(**options) -> list[Prompt]`` under ``name``; ``label`` is
    the set's name in report titles, ``heldout_options`` the options that select its held-out
    evaluation prompts when a run's ``prompts.eval_options`` does not say (e.g. ``{"split": "heldout"}``)."""
    return PROMPT_SETS.register(name, label=label, heldout_options=dict(heldout_options or {}))


def heldout_options(name: str) -> dict:
    """The options a set's registration gives its held-out prompts (none for 'list' or an unknown set,
    which the config's name check reports)."""
    if name == "list" or name not in PROMPT_SETS:
        return {}
    return dict(PROMPT_SETS.entry(name).extra.get("heldout_options", {}))


def prompt_set_names() -> list[str]:
    """Every registered prompt set, plugins' included."""
    return PROMPT_SETS.names()


def get_prompts(name: str, **options) -> list[Prompt]:
    """The prompts of the set ``name`` (see :data:`PROMPT_SETS`), built with ``options``."""
    return PROMPT_SETS[name](**options)


@functools.cache
def _lines(filename: str) -> tuple[str, ...]:
    text = (DATA / filename).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _with_article(noun: str) -> str:
    """``inflect``'s ``a()`` for these nouns (DDPO's ``IE.a``): "an" before a vowel letter."""
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


@register_prompt_set("simple_animals", label="animals")
def simple_animals() -> list[Prompt]:
    """DDPO's 45 animals; the prompt is the bare animal name, as DDPO uses it."""
    return [Prompt(animal, (animal,)) for animal in _lines("simple_animals.txt")]


@register_prompt_set("nouns_activities", label="animals x activities")
def nouns_activities() -> list[Prompt]:
    """Every animal with each of DDPO's 3 activities (135): "a monkey washing the dishes"."""
    return [
        Prompt(f"{_with_article(animal)} {activity}", (animal, activity))
        for animal in _lines("simple_animals.txt")
        for activity in _lines("activities.txt")
    ]


@functools.cache
def _drawbench() -> tuple[tuple[str, str], ...]:
    with (DATA / "drawbench.csv").open(encoding="utf-8", newline="") as f:
        return tuple((row["prompt"], row["category"]) for row in csv.DictReader(f))


def drawbench_categories() -> list[str]:
    return sorted({category for _, category in _drawbench()})


@register_prompt_set("drawbench", label="DrawBench")
def drawbench(category: str | Sequence[str] | None = None) -> list[Prompt]:
    """The 200 DrawBench prompts, optionally only those of ``category`` (one or several, any case)."""
    wanted = None
    if category is not None:
        requested = [category] if isinstance(category, str) else list(category)
        valid = {c.lower(): c for c in drawbench_categories()}
        unknown = [c for c in requested if c.lower() not in valid]
        if unknown:
            raise ValueError(f"unknown DrawBench categories {unknown}; valid: {drawbench_categories()}")
        wanted = {valid[c.lower()] for c in requested}
    return [Prompt(text, None, {"category": cat}) for text, cat in _drawbench() if wanted is None or cat in wanted]


@register_prompt_set("file")
def from_file(path: str | Path, column: str = "prompt") -> list[Prompt]:
    """Prompts from a ``.txt`` file (one a line, blank lines skipped) or a ``.csv`` with a ``prompt``
    column (and an optional ``category`` column, kept in the metadata)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        prompts = list(_csv_prompts(path, column))
    elif suffix in (".txt", ""):
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [Prompt(line.strip()) for line in lines if line.strip()]
    else:
        raise ValueError(f"prompt file {str(path)!r}: expected a .txt or .csv file, got {suffix!r}")
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def _csv_prompts(path: Path, column: str) -> Iterable[Prompt]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"prompt file {str(path)!r} has no {column!r} column; columns: {reader.fieldnames}")
        for row in reader:
            text = (row[column] or "").strip()
            if text:
                metadata = {"category": row["category"]} if row.get("category") else {}
                yield Prompt(text, None, metadata)
