"""A search's space as Optuna sees it: asking a trial for its values (a parameter may apply only
``when`` others have given values), turning them into run-config values, and the points that
exercise the space when a study is validated."""

from __future__ import annotations

import itertools
import json
from typing import Any

from diffexp.harness.study_file import SearchParam


def search_values(space: dict[str, SearchParam], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's params -> the run config's values (a float range's two ends as one [lo, hi])."""
    out = {}
    for key, param in space.items():
        if param.type == "float_range":
            if f"{key}[lo]" in params:
                lo, hi = params[f"{key}[lo]"], params[f"{key}[hi]"]
                out[key] = [min(lo, hi), max(lo, hi)]
        elif key in params:
            out[key] = params[key]
    return out


def suggest(space: dict[str, SearchParam], trial) -> dict[str, Any]:
    """Ask an Optuna trial for the search space's values (honouring ``when``); returns its params."""
    params: dict[str, Any] = {}
    for key, p in space.items():
        if not condition_holds(p.when, params):
            continue
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        elif p.type == "float":
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
        else:
            params[f"{key}[lo]"] = trial.suggest_float(f"{key}[lo]", p.low, p.high)
            params[f"{key}[hi]"] = trial.suggest_float(f"{key}[hi]", p.low, p.high)
    return params


def examples(space: dict[str, SearchParam], n_random: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """Points that exercise the search space for validation: each categorical combination at
    the low and high ends of the numeric params (up to 32), plus a few random points."""
    import random

    cats = [k for k, p in space.items() if p.type == "categorical"]
    combos = list(itertools.product(*[space[k].choices for k in cats]))[:16]
    points = []

    def numeric(p, end):
        if p.type == "int":
            return int(p.low if end == "low" else p.high)
        return p.low if end == "low" else p.high

    for combo in combos:
        for end in ("low", "high"):
            chosen = dict(zip(cats, combo))

            def value(k, p, chosen=chosen, end=end):
                return chosen[k] if p.type == "categorical" else numeric(p, end)

            points.append(_point(space, value))
    rng = random.Random(seed)
    for _ in range(n_random):
        points.append(
            _point(
                space,
                lambda k, p: (
                    rng.choice(p.choices)
                    if p.type == "categorical"
                    else (rng.randint(int(p.low), int(p.high)) if p.type == "int" else rng.uniform(p.low, p.high))
                ),
            )
        )
    unique = {json.dumps(p, sort_keys=True): p for p in points}
    return list(unique.values())


def _point(space: dict[str, SearchParam], pick) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, p in space.items():
        if not condition_holds(p.when, params):
            continue
        if p.type == "float_range":
            a, b = pick(key, p), pick(key, SearchParam(type="float", low=p.low, high=p.high))
            params[f"{key}[lo]"], params[f"{key}[hi]"] = min(a, b), max(a, b)
            if params[f"{key}[lo]"] == params[f"{key}[hi]"]:
                params[f"{key}[lo]"], params[f"{key}[hi]"] = p.low, p.high
        else:
            params[key] = pick(key, p)
    return params


def condition_holds(when: dict[str, Any], params: dict[str, Any]) -> bool:
    for key, wanted in when.items():
        if key not in params:
            return False
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if params[key] not in allowed:
            return False
    return True
