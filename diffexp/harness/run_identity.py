"""What a run is, to the harness: its config as dotted keys, its identity (the cell key a folder
and an MLflow run are named by, the config hash that tells a finished run from a changed one),
the rewards it uses and the tags every trial carries."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel

from diffexp.algorithms.mlflow_run import run_tags
from diffexp.harness.study_file import StudyError
from diffexp.plugins import fingerprints

#: Excluded from the config hash: they say where a run goes, not what it does.
LOCATION_KEYS = (
    "output_dir",
    "name",
    "loggers",
    "mlflow_tracking_uri",
    "mlflow_experiment",
    "mlflow_run_id",
    "mlflow_tags",
)


def _section_class(cls, parts: list[str]):
    """The pydantic class of the config section at ``parts`` (None when it is a plain field)."""
    for part in parts:
        info = getattr(cls, "model_fields", {}).get(part)
        if info is None:
            return None
        ann = info.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def flatten(data: dict[str, Any], cls, prefix: str = "") -> dict[str, Any]:
    """Nested and/or dotted mapping -> dotted keys, descending only into config sections.

    A section given as a mapping merges into the base; a plain field (even a dict-valued one,
    like ``reward.options``) replaces it.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise StudyError(f"{prefix}{key}: config keys must be strings")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and _section_class(cls, dotted.split(".")) is not None:
            out.update(flatten(value, cls, dotted + "."))
        else:
            out[dotted] = value
    return out


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def cell_key(params: dict[str, Any]) -> str:
    """A stable folder/run name for a grid cell: its values, then a hash of the whole cell."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = "_".join(_slug(v) for v in params.values())[:80]
    return f"{readable}-{digest}"


def config_hash(config) -> str:
    """What a run does, independent of where it is written: 12 hex digits."""
    data = config.model_dump(mode="json")
    data["run"] = {k: v for k, v in data["run"].items() if k not in LOCATION_KEYS}
    weights = fingerprints([config.model.pretrained, *reward_parts(config.reward)])
    if weights:
        data["weights_fingerprints"] = weights  # retrained shipped weights = a different run
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def reward_parts(reward) -> list[str]:
    """The registered rewards a reward config uses (its name, or each weighted part's reward)."""
    if not reward.weights:
        return [reward.name]
    return [str(v.get("reward", k)) if isinstance(v, dict) else k for k, v in reward.weights.items()]


def describe(config) -> dict[str, str]:
    """The tags every trial carries: algorithm, strategy, seed, reward, prompt set, config hash."""
    return {**run_tags(config), "config_hash": config_hash(config)}


def queries_per_epoch(config) -> int:
    return config.sample.batch_size * config.sample.num_batches_per_epoch * config.run.devices
