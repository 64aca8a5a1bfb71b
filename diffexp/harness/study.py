"""Study files: a YAML description of an ablation grid or a hyper-parameter search.

A study is a base run config (a path to a run YAML, or an inline mapping) plus, per trial, dotted
config overrides. Either a ``grid`` (every combination of its axes, run with Optuna's
GridSampler semantics: each cell exactly once) or a ``search`` (a space sampled by TPE or at
random, with pruning on an intermediate metric at reward-query checkpoints). See
``docs/SWEEPS.md`` for the format; :func:`load_study` reads and validates one.

Grid axes are either a dotted config key with a list of scalar values::

    exploration.strategy: [baseline, cfg]

or a *named variant axis*: a mapping from a value name to the overrides it applies (and,
optionally, a ``base`` run config that replaces the study's)::

    algorithm:
      ddpo: {base: ../embedded/ddpo.yaml}
      alignprop: {base: ../embedded/alignprop.yaml, overrides: {train.truncation.k: 2}}

Precedence, last wins: base config, study ``overrides``, variant overrides (axis order), plain
axis values (or search suggestions), then the harness's own run fields (``run.output_dir``,
``run.name`` and the MLflow fields), which a study may not set.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffexp.algorithms.config import ConfigError, config_class, load_config
from diffexp.algorithms.mlflow_run import run_tags
from diffexp.plugins import fingerprints

#: Run fields the harness sets for every trial; a study may not set them.
HARNESS_KEYS = ("run.output_dir", "run.name", "run.mlflow_run_id", "run.mlflow_experiment", "run.mlflow_tracking_uri")
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

Scalar = None | bool | int | float | str


class StudyError(ValueError):
    """A study file that cannot be read or validated; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Variant(_Strict):
    """One value of a named grid axis: overrides, and optionally a base config of its own."""

    base: str | dict[str, Any] | None = Field(
        None, description="run YAML path (relative to the study file) or inline config; replaces the study's base"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted config keys (or nested sections) -> value"
    )


class SearchParam(_Strict):
    """One dimension of a search space, named by the dotted config key it sets."""

    type: Literal["float", "int", "categorical", "float_range"] = Field(
        ..., description="float_range suggests [lo, hi] (two params, sorted)"
    )
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0, description="grid step of a float/int (no step: continuous)")
    log: bool = Field(False, description="sample on a log scale (low > 0)")
    choices: list[Scalar] | None = Field(None, description="values of a categorical")
    when: dict[str, Any] = Field(
        default_factory=dict,
        description="only suggested when these earlier params have these values (a value or a list)",
    )

    @model_validator(mode="after")
    def _shape(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical needs a non-empty `choices` list")
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("a categorical takes `choices`, not low/high/step/log")
            return self
        if self.choices is not None:
            raise ValueError(f"`choices` is only for categoricals, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale needs low > 0 and no step")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int needs integer low and high")
        if self.type == "float_range" and (self.step is not None or self.log):
            raise ValueError("a float_range takes only low and high")
        return self


class PrunerSpec(_Strict):
    """Pruning on the intermediate metric, reported once per epoch with step = reward queries."""

    kind: Literal["median", "percentile", "hyperband", "successive_halving", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0, description="median/percentile: trials that finish before any pruning")
    n_warmup_steps: int = Field(0, ge=0, description="median/percentile: reward queries before a trial can be pruned")
    interval_steps: int = Field(1, ge=1, description="median/percentile: check every N steps (reward queries)")
    percentile: float = Field(50.0, gt=0, lt=100, description="percentile pruner: keep trials above this percentile")
    min_resource: int | str = Field(
        "auto", description="hyperband/successive_halving: reward queries before the first rung"
    )
    max_resource: int | str = Field("auto", description="hyperband: a trial's full budget in reward queries")
    reduction_factor: int = Field(3, ge=2, description="hyperband/successive_halving")

    def build(self):
        import optuna

        if self.kind == "median":
            return optuna.pruners.MedianPruner(self.n_startup_trials, self.n_warmup_steps, self.interval_steps)
        if self.kind == "percentile":
            return optuna.pruners.PercentilePruner(
                self.percentile, self.n_startup_trials, self.n_warmup_steps, self.interval_steps
            )
        if self.kind == "hyperband":
            return optuna.pruners.HyperbandPruner(self.min_resource, self.max_resource, self.reduction_factor)
        if self.kind == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(self.min_resource, self.reduction_factor)
        return optuna.pruners.NopPruner()


class SearchSpec(_Strict):
    sampler: Literal["tpe", "random"] = "tpe"
    n_trials: int = Field(
        ..., ge=1, description="trials in the study, over all workers (retries of a dead worker's trial not counted)"
    )
    seed: int | None = Field(0, description="sampler seed")
    n_startup_trials: int = Field(5, ge=0, description="TPE: random trials before the model is used")
    multivariate: bool = Field(False, description="TPE: multivariate (group-wise with conditional params)")
    constant_liar: bool = Field(
        True, description="TPE: avoid proposing points close to running trials (parallel workers)"
    )
    space: dict[str, SearchParam] = Field(..., min_length=1, description="dotted config key -> distribution")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)

    @model_validator(mode="after")
    def _conditions(self):
        seen: list[str] = []
        for key, param in self.space.items():
            for ref in param.when:
                if ref not in seen:
                    raise ValueError(f"space.{key}.when: {ref!r} must be a param listed before {key!r}")
            seen.append(key)
        return self

    def build_sampler(self):
        import optuna

        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        return optuna.samplers.TPESampler(
            seed=self.seed,
            n_startup_trials=self.n_startup_trials,
            multivariate=self.multivariate,
            group=self.multivariate,
            constant_liar=self.constant_liar,
        )


class ObjectiveSpec(_Strict):
    metric: str = Field("eval_reward_mean", description="the trial's value: this metric after the last epoch")
    direction: Literal["maximize", "minimize"] = "maximize"
    intermediate: str = Field(
        "reward_mean", description="reported to Optuna after every epoch (step = reward queries) for pruning"
    )


class Profile(_Strict):
    """A named variant of a whole study (e.g. ``quick``, ``full``): its own budget and seeds.

    A profile's study is named ``<name>-<profile>`` so that its trials, storage and MLflow
    experiment never mix with the default's.
    """

    description: str = ""
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted keys merged over the study's `overrides`"
    )
    grid: dict[str, list[Any] | dict[str, Any]] = Field(
        default_factory=dict,
        description="axis -> values that replace the axis's (e.g. run.seed: [0]); for a named axis, "
        "variant -> {overrides: ...} merged over that variant's overrides",
    )
    workers: int | None = Field(None, ge=1, description="replaces the study's `workers`")
    search: dict[str, Any] = Field(
        default_factory=dict, description="search fields it replaces (n_trials, pruner: {...}, ...)"
    )


class StudySpec(_Strict):
    name: str = Field(..., description="Optuna study name and MLflow experiment name")
    description: str = ""
    base: str | dict[str, Any] = Field(
        default_factory=dict, description="run YAML path (relative to the study file) or inline config"
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted keys applied to every trial")
    grid: dict[str, list[Any] | dict[str, Any]] | None = Field(
        None, description="axis -> values (dotted key) or name -> variant (named axis)"
    )
    search: SearchSpec | None = None
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    run_dir: str | None = Field(
        None, description="default runs/sweeps/<name>; --run-dir overrides (relative to the working directory)"
    )
    storage: str | None = Field(
        None, description="default sqlite:///<run_dir>/optuna.db; any SQLAlchemy URL or journal:<file>"
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<run_dir>/mlflow.db")
    workers: int = Field(1, ge=1, description="default for --workers")
    heartbeat_interval: int = Field(60, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int | None = Field(
        None, ge=1, description="seconds without a heartbeat before a trial counts as dead (default 3 x interval)"
    )
    max_retry: int = Field(3, ge=0, description="re-runs of a trial whose worker died")
    profiles: dict[str, Profile] = Field(
        default_factory=dict, description="named variants (--profile NAME); none = the file as written"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '_', '.', '-' (it names folders and the MLflow experiment)")
        return v

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.grid is None) == (self.search is None):
            raise ValueError("give exactly one of `grid` (an ablation grid) or `search` (a hyper-parameter search)")
        if self.grid is not None and not self.grid:
            raise ValueError("grid: give at least one axis")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period ({self.grace_period}) must exceed heartbeat_interval ({self.heartbeat_interval})"
            )
        return self

    @property
    def effective_grace_period(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval


@dataclass
class TrialSpec:
    """One trial's identity and config recipe (the harness's run fields are added later)."""

    key: str
    params: dict[str, Any]
    base: Path | dict[str, Any] | None
    overrides: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


# -- helpers ---------------------------------------------------------------------------------
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


def _format_spec_error(err: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"invalid study file {source}:"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # pydantic adds union-member names to the location ("list[any]", "function-after[...]")
        loc = [p for p in loc if not re.match(r"^(list|dict|str|function-\w+|union)\b", p)]
        lines.append(f"  {'.'.join([prefix] * bool(prefix) + loc) or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


# -- the study ---------------------------------------------------------------------------------
class StudyPlan:
    """A validated study file: its trials and how to build each trial's run config."""

    def __init__(self, spec: StudySpec, path: Path | None = None):
        self.spec = spec
        self.path = path
        self.source = str(path) if path else "(inline study)"
        self.profile: str | None = None  # set by load_study; workers re-read the file with it
        self._base = self._resolve_base(spec.base, "base")
        self._axes = self._parse_grid() if spec.grid is not None else {}
        self._check_overrides(spec.overrides, "overrides")
        if spec.search is not None:
            for key in spec.search.space:
                self._check_key(key, f"search.space.{key}")

    # -- parsing ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return "grid" if self.spec.grid is not None else "search"

    def _error(self, where: str, msg: str) -> StudyError:
        return StudyError(f"invalid study file {self.source}:\n  {where}: {msg}")

    def _resolve_base(self, base, where: str):
        if isinstance(base, dict):
            return base
        path = Path(base).expanduser()
        if not path.is_absolute():
            path = (self.path.parent if self.path else Path.cwd()) / path
        if not path.exists():
            raise self._error(where, f"run config {path} does not exist")
        return path

    def _check_key(self, key: str, where: str) -> None:
        if key in HARNESS_KEYS:
            raise self._error(where, f"{key} is set by the harness for every trial (use --run-dir / --tracking-uri)")

    def _check_overrides(self, overrides: dict[str, Any], where: str) -> None:
        for key in flatten(overrides, config_class("ddpo")):
            self._check_key(key, f"{where}.{key}")

    def _parse_grid(self) -> dict[str, tuple[str, Any]]:
        """axis -> ("values", [scalars]) or ("variants", {name: Variant})."""
        axes: dict[str, tuple[str, Any]] = {}
        for axis, values in self.spec.grid.items():
            where = f"grid.{axis}"
            if isinstance(values, list):
                self._check_key(axis, where)
                if not values:
                    raise self._error(where, "give at least one value")
                for v in values:
                    if not isinstance(v, (type(None), bool, int, float, str)):
                        raise self._error(
                            where,
                            f"value {v!r} is not a scalar; use a named variant axis "
                            f"({axis}: {{name: {{overrides: ...}}}}) for lists or sections",
                        )
                if len({json.dumps(v) for v in values}) != len(values):
                    raise self._error(where, "values repeat")
                axes[axis] = ("values", list(values))
                continue
            if not values:
                raise self._error(where, "give at least one variant")
            variants = {}
            for name, body in values.items():
                body = body or {}
                if not isinstance(body, dict):
                    raise self._error(
                        f"{where}.{name}", f"a variant is a mapping of overrides (or base/overrides), got {body!r}"
                    )
                if not ({"base", "overrides"} & set(body)):  # a bare mapping of overrides
                    body = {"overrides": body}
                try:
                    variant = Variant(**body)
                except ValidationError as err:
                    raise StudyError(_format_spec_error(err, self.source, f"{where}.{name}")) from None
                self._check_overrides(variant.overrides, f"{where}.{name}")
                base = self._resolve_base(variant.base, f"{where}.{name}.base") if variant.base is not None else None
                variants[str(name)] = (base, variant.overrides)
            axes[axis] = ("variants", variants)
        return axes

    # -- trials -----------------------------------------------------------------------------
    def grid_search_space(self) -> dict[str, list]:
        """Optuna's view of the grid (what GridSampler takes): axis -> values or variant names."""
        return {axis: list(values) for axis, (_, values) in self._axes.items()}  # a variant axis: its names

    def cells(self) -> list[TrialSpec]:
        """Every grid cell, in axis order (the first axis varies slowest)."""
        space = self.grid_search_space()
        cells = [self.resolve(dict(zip(space, combo))) for combo in itertools.product(*space.values())]
        keys = [c.key for c in cells]
        assert len(set(keys)) == len(keys)
        return cells

    def resolve(self, params: dict[str, Any], key: str | None = None) -> TrialSpec:
        """The trial for Optuna params (grid axis values, or search suggestions)."""
        base = self._base
        layers = [self.spec.overrides]
        variant_base_from = None
        plain: dict[str, Any] = {}
        for name, value in params.items():
            kind, axis = self._axes.get(name, ("values", None))
            if kind == "variants":
                if value not in axis:
                    raise self._error(f"grid.{name}", f"no variant {value!r}; variants: {sorted(axis)}")
                vbase, vover = axis[value]
                if vbase is not None:
                    if variant_base_from is not None:
                        raise self._error(
                            f"grid.{name}.{value}.base",
                            f"grid.{variant_base_from} also sets a base config; only one axis may",
                        )
                    base, variant_base_from = vbase, f"{name}.{value}"
                layers.append(vover)
            else:
                plain[name] = value
        layers.append(self._search_values(plain) if self.kind == "search" else plain)
        cls = _config_class_for(base, layers)
        overrides: dict[str, Any] = {}
        for layer in layers:
            overrides.update(flatten(layer, cls))
        return TrialSpec(key=key or cell_key(params), params=dict(params), base=base, overrides=overrides)

    def _search_values(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, param in self.spec.search.space.items():
            if param.type == "float_range":
                if f"{key}[lo]" in params:
                    lo, hi = params[f"{key}[lo]"], params[f"{key}[hi]"]
                    out[key] = [min(lo, hi), max(lo, hi)]
            elif key in params:
                out[key] = params[key]
        return out

    def suggest(self, trial) -> dict[str, Any]:
        """Ask an Optuna trial for the search space's values (honouring ``when``); returns its params."""
        params: dict[str, Any] = {}
        for key, p in self.spec.search.space.items():
            if not _condition_holds(p.when, params):
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

    def search_examples(self, n_random: int = 4, seed: int = 0) -> list[dict[str, Any]]:
        """Points that exercise the search space for validation: each categorical combination at
        the low and high ends of the numeric params (up to 32), plus a few random points."""
        import random

        space = self.spec.search.space
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

                points.append(self._point(value))
        rng = random.Random(seed)
        for _ in range(n_random):
            points.append(
                self._point(
                    lambda k, p: (
                        rng.choice(p.choices)
                        if p.type == "categorical"
                        else (rng.randint(int(p.low), int(p.high)) if p.type == "int" else rng.uniform(p.low, p.high))
                    )
                )
            )
        unique = {json.dumps(p, sort_keys=True): p for p in points}
        return list(unique.values())

    def _point(self, pick) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, p in self.spec.search.space.items():
            if not _condition_holds(p.when, params):
                continue
            if p.type == "float_range":
                a, b = pick(key, p), pick(key, SearchParam(type="float", low=p.low, high=p.high))
                params[f"{key}[lo]"], params[f"{key}[hi]"] = min(a, b), max(a, b)
                if params[f"{key}[lo]"] == params[f"{key}[hi]"]:
                    params[f"{key}[lo]"], params[f"{key}[hi]"] = p.low, p.high
            else:
                params[key] = pick(key, p)
        return params

    # -- configs ----------------------------------------------------------------------------
    def build_config(self, trial: TrialSpec, run_fields: dict[str, Any] | None = None):
        """The validated run config of a trial (``run_fields``: the harness's run.* values)."""
        overrides = dict(trial.overrides)
        base_path = None
        if isinstance(trial.base, Path):
            base_path = trial.base
        else:
            algorithm = overrides.get("algorithm", (trial.base or {}).get("algorithm", "ddpo"))
            try:
                cls = config_class(algorithm)
            except ConfigError:
                cls = config_class("ddpo")
            overrides = {**flatten(trial.base or {}, cls), **overrides}
        overrides.update(run_fields or {})
        try:
            config = load_config(base_path, overrides)
        except ConfigError as err:
            text = str(err).replace("invalid config (defaults):", "invalid run config:")
            raise StudyError(f"trial {trial.key} ({trial.label()}) in {self.source}: {text}") from None
        self._check_registered(config, trial)
        return config

    def _check_registered(self, config, trial: TrialSpec) -> None:
        from diffexp.prompts.sets import prompt_set_names
        from diffexp.rewards import reward_names

        rewards, prompt_sets = reward_names(), prompt_set_names()
        for name in reward_parts(config.reward):
            if name not in rewards:
                field = "reward.weights" if config.reward.weights else "reward.name"
                raise StudyError(
                    f"trial {trial.key} ({trial.label()}) in {self.source}: {field}: unknown reward {name!r}; "
                    f"registered: {rewards}"
                )
        if config.prompts.set != "list" and config.prompts.set not in prompt_sets:
            raise StudyError(
                f"trial {trial.key} ({trial.label()}) in {self.source}: prompts.set: unknown prompt set "
                f"{config.prompts.set!r}; known: {prompt_sets} or 'list'"
            )

    def fingerprint(self) -> str:
        """Identifies the trials a study defines (the grid's cells, or the search space)."""
        if self.kind == "grid":
            data: Any = sorted(c.key for c in self.cells())
        else:
            data = self.spec.search.model_dump(mode="json", exclude={"n_trials"})
        return hashlib.sha256(
            json.dumps([data, self.spec.objective.model_dump()], sort_keys=True).encode()
        ).hexdigest()[:16]

    def trials_for_validation(self) -> list[TrialSpec]:
        if self.kind == "grid":
            return self.cells()
        return [self.resolve(p, key=f"example-{i}") for i, p in enumerate(self.search_examples())]

    def check_objective(self) -> None:
        """The objective and intermediate metrics must be ones the trials log (a typo would fail
        every trial after its training); raises :class:`StudyError` naming the close matches."""
        import difflib

        from diffexp.algorithms.registry import get_algorithm

        objective = self.spec.objective
        for trial in self.trials_for_validation():
            config = self.build_config(trial, {"run.name": "validation"})
            names = get_algorithm(config.algorithm).module_class.metric_names(config)
            if names is None:  # an evaluator that does not declare its metrics: nothing to check against
                continue
            for where, metric in (
                ("objective.metric", objective.metric),
                ("objective.intermediate", objective.intermediate),
            ):
                if metric not in names:
                    close = difflib.get_close_matches(metric, sorted(names), n=3)
                    hint = f"; did you mean {', '.join(close)}?" if close else f"; logged: {', '.join(sorted(names))}"
                    raise StudyError(f"{where}: trial {trial.key} logs no metric {metric!r}{hint}")


def _config_class_for(base, layers: list[dict[str, Any]]):
    """The config class (DDPO or AlignProp) a trial will have: sections differ between them."""
    algorithm = None
    for layer in layers:
        algorithm = layer.get("algorithm", algorithm)
    if algorithm is None:
        if isinstance(base, Path):
            try:
                algorithm = (yaml.safe_load(base.read_text()) or {}).get("algorithm")
            except (OSError, yaml.YAMLError, AttributeError):
                algorithm = None
        elif isinstance(base, dict):
            algorithm = base.get("algorithm")
    try:
        return config_class(algorithm or "ddpo")
    except ConfigError:
        return config_class("ddpo")  # validation names the bad algorithm later


def _condition_holds(when: dict[str, Any], params: dict[str, Any]) -> bool:
    for key, wanted in when.items():
        if key not in params:
            return False
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if params[key] not in allowed:
            return False
    return True


def load_study(path: str | Path, profile: str | None = None) -> StudyPlan:
    """Read and validate a study file (not yet its trials' configs: see :meth:`StudyPlan.build_config`).

    ``profile`` picks one of the file's ``profiles``; ``None`` or ``"default"`` is the file as written.
    """
    path = Path(path)
    if not path.exists():
        raise StudyError(f"study file {path} does not exist")
    if not path.is_file():
        raise StudyError(f"study file {path} is not a file (a directory?); give the path of a study YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise StudyError(f"study file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise StudyError(f"study file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise StudyError(f"study file {path} must contain a mapping at the top level, got {type(data).__name__}")
    return study_from_dict(data, path, profile)


def study_from_dict(data: dict[str, Any], path: Path | None = None, profile: str | None = None) -> StudyPlan:
    source = str(path) if path else "(inline study)"
    try:
        spec = StudySpec(**data)
        if profile not in (None, "default"):
            spec = StudySpec(**apply_profile(spec, profile, source))
    except ValidationError as err:
        raise StudyError(_format_spec_error(err, source)) from None
    study = StudyPlan(spec, path)
    study.profile = None if profile in (None, "default") else profile
    return study


def apply_profile(spec: StudySpec, profile: str, source: str) -> dict[str, Any]:
    """The study's fields with the profile merged in (as a dict, validated again by the caller)."""
    if profile not in spec.profiles:
        known = ", ".join(["default", *spec.profiles]) or "default"
        raise StudyError(f"invalid study file {source}:\n  --profile: no profile {profile!r} (known: {known})")
    chosen = spec.profiles[profile]
    data = spec.model_dump(exclude={"profiles"}, exclude_none=True)
    data["name"] = f"{spec.name}-{profile}"
    data["overrides"] = {**spec.overrides, **chosen.overrides}
    if chosen.grid:
        if spec.grid is None:
            raise StudyError(
                f"invalid study file {source}:\n  profiles.{profile}.grid: the study is a search, not a grid"
            )
        unknown = sorted(set(chosen.grid) - set(spec.grid))
        if unknown:
            raise StudyError(
                f"invalid study file {source}:\n  profiles.{profile}.grid: {unknown} are not axes of the grid"
            )
        grid = dict(data["grid"])
        for axis, values in chosen.grid.items():
            if isinstance(values, list):
                grid[axis] = values
                continue
            if not isinstance(grid[axis], dict):
                raise StudyError(
                    f"invalid study file {source}:\n  profiles.{profile}.grid.{axis}: a plain axis takes a list of "
                    "values"
                )
            variants = dict(grid[axis])
            for name, change in values.items():
                if name not in variants:
                    raise StudyError(
                        f"invalid study file {source}:\n  profiles.{profile}.grid.{axis}.{name}: not a value of the "
                        "axis"
                    )
                if not isinstance(change, dict) or set(change) - {"overrides"}:
                    raise StudyError(
                        f"invalid study file {source}:\n  profiles.{profile}.grid.{axis}.{name}: "
                        "give {overrides: {...}}"
                    )
                variant = dict(variants[name] or {})
                if not ({"base", "overrides"} & set(variant)):  # a bare mapping of overrides
                    variant = {"overrides": variant}
                variant["overrides"] = {**variant.get("overrides", {}), **change.get("overrides", {})}
                variants[name] = variant
            grid[axis] = variants
        data["grid"] = grid
    if chosen.search:
        if spec.search is None:
            raise StudyError(
                f"invalid study file {source}:\n  profiles.{profile}.search: the study is a grid, not a search"
            )
        search = dict(data["search"])
        for key, value in chosen.search.items():
            merge = isinstance(value, dict) and isinstance(search.get(key), dict) and key != "space"
            search[key] = {**search[key], **value} if merge else value
        data["search"] = search
    if chosen.workers:
        data["workers"] = chosen.workers
    if chosen.description:
        data["description"] = f"{spec.description} ({profile}: {chosen.description})"
    return data
