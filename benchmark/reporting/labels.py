"""Display names, orderings and colours shared by tables, figures and the HTML page, so that a
strategy looks the same everywhere (same colour, same row position, same label)."""

from __future__ import annotations

STRATEGY_ORDER = ["baseline", "cfg", "phrase", "diffexp"]
STRATEGY_LABELS = {"baseline": "Baseline", "cfg": "CFG only", "phrase": "Phrase only", "diffexp": "DiffExp"}
STRATEGY_COLORS = {"baseline": "#6b6b6b", "cfg": "#1f77b4", "phrase": "#ff7f0e", "diffexp": "#d62728"}
ALGORITHM_ORDER = ["ddpo", "alignprop"]
ALGORITHM_LABELS = {"ddpo": "DDPO", "alignprop": "AlignProp"}
METRIC_LABELS = {
    "reward_mean": "reward (training samples)",
    "eval_reward_mean": "reward (held-out, fixed seeds)",
    "diversity": "within-prompt diversity (training)",
    "eval_diversity": "within-prompt diversity (held-out)",
    "eval_gt_accuracy": "ground-truth accuracy (held-out)",
}
BASELINE = "baseline"
_EXTRA_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def ordered(values, order: list[str]) -> list[str]:
    """Known names in ``order`` first, then the rest alphabetically."""
    values = sorted({str(v) for v in values})
    return [v for v in order if v in values] + [v for v in values if v not in order]


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name)


def algorithm_label(name: str) -> str:
    return ALGORITHM_LABELS.get(name, name)


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


def strategy_palette(strategies) -> dict[str, str]:
    """A fixed colour per known strategy; unknown ones get the next free colour."""
    extra = iter(_EXTRA_COLORS * 4)
    return {s: STRATEGY_COLORS.get(s) or next(extra) for s in ordered(strategies, STRATEGY_ORDER)}
