"""What a run is: its config as dotted keys, its identity (the cell key a folder and an MLflow run
are named by, the config hash that tells a finished run from a changed one, the fields that may
change when it resumes), the rewards it uses and the tags every run carries. The trainer, the
harness and the reports read these from here and nowhere else."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel

from diffexp.algorithms.run_record import CONFIG_HASH_TAG
from diffexp.plugins import fingerprints

#: the algorithm of a config that names none (ddpo-pytorch's: this project began as its port)
DEFAULT_ALGORITHM = "ddpo"

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
            raise ValueError(f"{prefix}{key}: config keys must be strings")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and _section_class(cls, dotted.split(".")) is not None:
            out.update(flatten(value, cls, dotted + "."))
        else:
            out[dotted] = value
    return out


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dump -> dotted keys, descending into every non-empty mapping (MLflow params, diffs)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``"a.b"``, creating sections; a non-section in the way is an error."""
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


#: config fields that may change when a run resumes: where and how it is logged, how long it goes
#: on, how often it evaluates or checkpoints, and on what hardware; everything else is the run
RESUMABLE = (
    "run.num_epochs",
    "run.save_every",
    "run.eval_every",
    "run.eval_at_start",
    "run.loggers",
    "run.threads",
    "run.output_dir",
    "run.accelerator",
    "run.mlflow_tracking_uri",
    "run.mlflow_experiment",
    "run.mlflow_run_id",
    "run.mlflow_tags",
)


def resumable(field: str) -> bool:
    """Whether a dotted field (or a key inside one, e.g. ``run.mlflow_tags.team``) may change on resume."""
    return any(field == name or field.startswith(name + ".") for name in RESUMABLE)


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
    return [p.reward for p in reward.parts()]


def run_tags(config) -> dict[str, str]:
    """What identifies a run among a study's: algorithm, strategy, seed, reward, prompt set."""
    prompts = config.prompts.set
    if prompts == "list":
        prompts = f"list({len(config.prompts.prompts)})"
    elif config.prompts.options:
        prompts += "(" + ",".join(f"{k}={v}" for k, v in sorted(config.prompts.options.items())) + ")"
    return {
        "algorithm": config.algorithm,
        "strategy": config.exploration.strategy,
        "seed": str(config.run.seed),
        "reward": config.reward.describe(),
        "prompt_set": prompts,
    }


def describe(config) -> dict[str, str]:
    """The tags every trial carries: algorithm, strategy, seed, reward, prompt set, config hash."""
    return {**run_tags(config), CONFIG_HASH_TAG: config_hash(config)}


def queries_per_epoch(config) -> int:
    return config.sample.batch_size * config.sample.num_batches_per_epoch * config.run.devices
