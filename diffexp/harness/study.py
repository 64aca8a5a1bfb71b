"""A study as a plan of trials: the grid's cells or the search's suggestions, each one's run
config built from the study file (:mod:`diffexp.harness.study_file`) and checked before anything
runs; :func:`load_study` reads and validates a file."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from diffexp.algorithms.config import ConfigError, config_class, load_config
from diffexp.algorithms.run_identity import LOCATION_KEYS, cell_key, flatten
from diffexp.harness import search_space
from diffexp.harness.study_file import (
    HARNESS_KEYS,
    StudyError,
    StudySpec,
    Variant,
    apply_profile,
    format_spec_error,
)


@dataclass
class TrialSpec:
    """One trial's identity and config recipe (the harness's run fields are added later)."""

    key: str
    params: dict[str, Any]
    base: Path | dict[str, Any] | None
    overrides: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class StudyPlan:
    """A validated study file: its trials and how to build each trial's run config."""

    def __init__(self, spec: StudySpec, path: Path | None = None):
        self.spec = spec
        self.path = path
        self.source = str(path) if path else "(inline study)"
        self.profile: str | None = None  # set by load_study; workers re-read the file with it
        self._configs: dict[str, Any] = {}  # a trial's recipe -> its validated run config
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

    def _flatten(self, data: dict[str, Any], cls, where: str) -> dict[str, Any]:
        try:
            return flatten(data, cls)
        except ValueError as err:
            raise self._error(where, str(err)) from None

    def _check_key(self, key: str, where: str) -> None:
        if key in HARNESS_KEYS:
            raise self._error(where, f"{key} is set by the harness for every trial (use --run-dir / --tracking-uri)")

    def _check_overrides(self, overrides: dict[str, Any], where: str) -> None:
        for key in self._flatten(overrides, config_class(), where):
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
                    raise StudyError(format_spec_error(err, self.source, f"{where}.{name}")) from None
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
            overrides.update(self._flatten(layer, cls, "overrides"))
        return TrialSpec(key=key or cell_key(params), params=dict(params), base=base, overrides=overrides)

    def _search_values(self, params: dict[str, Any]) -> dict[str, Any]:
        return search_space.search_values(self.spec.search.space, params)

    def suggest(self, trial) -> dict[str, Any]:
        """Ask an Optuna trial for the search space's values (honouring ``when``); returns its params."""
        return search_space.suggest(self.spec.search.space, trial)

    def search_examples(self, n_random: int = 4, seed: int = 0) -> list[dict[str, Any]]:
        """Points that exercise the search space for validation (see :func:`search_space.examples`)."""
        return search_space.examples(self.spec.search.space, n_random, seed)

    # -- configs ----------------------------------------------------------------------------
    def build_config(self, trial: TrialSpec, run_fields: dict[str, Any] | None = None):
        """The validated run config of a trial, with ``run_fields`` (dotted values: the harness's
        run folder and tracking). What the run does is built and validated once per trial, however
        many callers ask; where it goes (``LOCATION_KEYS``) is then set on a copy."""
        fields = dict(run_fields or {})
        where = {k: fields.pop(k) for k in list(fields) if k.removeprefix("run.") in LOCATION_KEYS}
        recipe = repr((trial.base, trial.overrides, fields))  # insertion order kept: reward parts keep theirs
        if recipe not in self._configs:
            self._configs[recipe] = self._validated_config(trial, fields)
        config = self._configs[recipe].model_copy(deep=True)
        try:
            for dotted, value in where.items():
                setattr(config.run, dotted.removeprefix("run."), value)
        except (ValidationError, ValueError) as err:
            raise StudyError(f"trial {trial.key} ({trial.label()}) in {self.source}: {err}") from None
        return config

    def _validated_config(self, trial: TrialSpec, fields: dict[str, Any]):
        overrides = {**trial.overrides, **fields}
        base_path = None
        if isinstance(trial.base, Path):
            base_path = trial.base
        else:
            cls = config_class(overrides.get("algorithm", (trial.base or {}).get("algorithm")), lenient=True)
            overrides = {**self._flatten(trial.base or {}, cls, "base"), **overrides}
        try:
            return load_config(base_path, overrides)
        except ConfigError as err:
            text = str(err).replace("invalid config (defaults):", "invalid run config:")
            raise StudyError(f"trial {trial.key} ({trial.label()}) in {self.source}: {text}") from None

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
    return config_class(algorithm, lenient=True)  # validation names a bad algorithm later


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
        raise StudyError(format_spec_error(err, source)) from None
    study = StudyPlan(spec, path)
    study.profile = None if profile in (None, "default") else profile
    return study
