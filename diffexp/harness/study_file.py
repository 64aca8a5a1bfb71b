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

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Run fields the harness sets for every trial; a study may not set them.
HARNESS_KEYS = ("run.output_dir", "run.name", "run.mlflow_run_id", "run.mlflow_experiment", "run.mlflow_tracking_uri")


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


def format_spec_error(err: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"invalid study file {source}:"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # pydantic adds union-member names to the location ("list[any]", "function-after[...]")
        loc = [p for p in loc if not re.match(r"^(list|dict|str|function-\w+|union)\b", p)]
        lines.append(f"  {'.'.join([prefix] * bool(prefix) + loc) or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


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
