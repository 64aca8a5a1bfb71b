"""Display names, orderings and colours shared by tables, figures and the HTML page, so that a
strategy looks the same everywhere (same colour, same row position, same label). Strategies,
algorithms, rewards and prompt sets bring theirs with their registration; metrics are named here."""

from __future__ import annotations

from diffexp.algorithms.registry import ALGORITHMS
from diffexp.exploration import STRATEGIES
from diffexp.prompts.sets import PROMPT_SETS
from diffexp.rewards import REWARDS

METRIC_LABELS = {
    "reward_mean": "reward (training samples)",
    "eval_reward_mean": "reward (evaluation set)",
    "diversity": "pixel diversity (training)",
    "eval_diversity": "pixel diversity (evaluation set)",
    "eval_vendi": "Vendi score (evaluation set)",
    "eval_gt_accuracy": "ground truth: prompt following",
    "eval_gt_aesthetic": "ground truth: hidden aesthetic rule",
}
BASELINE = "baseline"
_EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def ordered(values, order: list[str]) -> list[str]:
    """Known names in ``order`` first, then the rest alphabetically."""
    values = sorted({str(v) for v in values})
    return [v for v in order if v in values] + [v for v in values if v not in order]


def strategy_order() -> list[str]:
    return [e.name for e in STRATEGIES.entries()]


def algorithm_order() -> list[str]:
    return [e.name for e in ALGORITHMS.entries()]


def strategy_label(name: str) -> str:
    return STRATEGIES.label(name)


def algorithm_label(name: str) -> str:
    return ALGORITHMS.label(name)


def metric_label(name: str) -> str:
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    if name.startswith("eval_score_"):
        return f"{reward_label(name.removeprefix('eval_score_'))} reward (evaluation set)"
    return name


def reward_label(name: str) -> str:
    return REWARDS.label(name)


def task_label(task: str) -> str:
    """A task is a reward, or 'reward · prompt set' when a study has several prompt sets."""
    reward, _, prompt_set = str(task).partition(" · ")
    text = reward_label(reward)
    name = prompt_set.split("(", 1)[0]  # a set's options, e.g. "(split=train)", name its training prompts
    label = PROMPT_SETS.label(name)
    return f"{text} on {label if label != name else prompt_set}" if prompt_set else text


def cell_label(algorithm: str, task: str) -> str:
    """'DDPO · aesthetic on single objects': one panel, one block of the verdict."""
    return f"{algorithm_label(algorithm)} · {task_label(task)}"


def strategy_palette(strategies) -> dict[str, str]:
    """A fixed colour per known strategy; unknown ones get the next free colour."""
    extra = iter(_EXTRA_COLORS * 4)
    known = {e.name: e.colour for e in STRATEGIES.entries()}
    return {s: known.get(s) or next(extra) for s in ordered(strategies, strategy_order())}
