"""Display names, orderings and colours shared by tables, figures and the HTML page, so that a
strategy looks the same everywhere (same colour, same row position, same label)."""

from __future__ import annotations

STRATEGY_ORDER = ["baseline", "cfg", "phrase", "diffexp", "sde_window", "guidance_interval"]
STRATEGY_LABELS = {
    "baseline": "Baseline",
    "cfg": "CFG only",
    "phrase": "Phrase only",
    "diffexp": "DiffExp",
    "sde_window": "SDE-noise window",
    "guidance_interval": "Guidance interval",
}
STRATEGY_COLORS = {
    "baseline": "#6b6b6b",
    "cfg": "#1f77b4",
    "phrase": "#ff7f0e",
    "diffexp": "#d62728",
    "sde_window": "#2ca02c",
    "guidance_interval": "#9467bd",
}
ALGORITHM_ORDER = ["ddpo", "grpo", "alignprop"]
ALGORITHM_LABELS = {"ddpo": "DDPO", "grpo": "GRPO", "alignprop": "AlignProp"}
METRIC_LABELS = {
    "reward_mean": "reward (training samples)",
    "eval_reward_mean": "reward (evaluation set)",
    "diversity": "pixel diversity (training)",
    "eval_diversity": "pixel diversity (evaluation set)",
    "eval_vendi": "Vendi score (evaluation set)",
    "eval_gt_accuracy": "ground truth: prompt following",
    "eval_gt_aesthetic": "ground truth: hidden aesthetic rule",
}
#: short names of rewards and prompt sets for panel titles (unknown names are shown as they are)
REWARD_LABELS = {
    "embedded_aesthetic": "aesthetic",
    "embedded_alignment": "alignment",
    "embedded_ground_truth": "ground-truth oracle",
    "aesthetic": "LAION aesthetic",
    "pickscore": "PickScore",
    "hps": "HPSv2",
    "hpsv2.1": "HPSv2.1",
    "jpeg_compressibility": "JPEG compressibility",
    "jpeg_incompressibility": "JPEG incompressibility",
}
PROMPT_SET_LABELS = {
    "embedded_objects": "single objects",
    "embedded_relations": "compositions",
    "simple_animals": "animals",
    "nouns_activities": "animals x activities",
    "drawbench": "DrawBench",
}
BASELINE = "baseline"
_EXTRA_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def ordered(values, order: list[str]) -> list[str]:
    """Known names in ``order`` first, then the rest alphabetically."""
    values = sorted({str(v) for v in values})
    return [v for v in order if v in values] + [v for v in values if v not in order]


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name)


def algorithm_label(name: str) -> str:
    return ALGORITHM_LABELS.get(name, name)


def metric_label(name: str) -> str:
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    if name.startswith("eval_score_"):
        return f"{reward_label(name.removeprefix('eval_score_'))} reward (evaluation set)"
    return name


def reward_label(name: str) -> str:
    return REWARD_LABELS.get(name, name)


def task_label(task: str) -> str:
    """A task is a reward, or 'reward · prompt set' when a study has several prompt sets."""
    reward, _, prompt_set = str(task).partition(" · ")
    text = reward_label(reward)
    name = prompt_set.split("(", 1)[0]  # a set's options, e.g. "(split=train)", name its training prompts
    return f"{text} on {PROMPT_SET_LABELS.get(name, prompt_set)}" if prompt_set else text


def cell_label(algorithm: str, task: str) -> str:
    """'DDPO · aesthetic on single objects': one panel, one block of the verdict."""
    return f"{algorithm_label(algorithm)} · {task_label(task)}"


def strategy_palette(strategies) -> dict[str, str]:
    """A fixed colour per known strategy; unknown ones get the next free colour."""
    extra = iter(_EXTRA_COLORS * 4)
    return {s: STRATEGY_COLORS.get(s) or next(extra) for s in ordered(strategies, STRATEGY_ORDER)}
