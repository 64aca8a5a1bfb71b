"""Typed, validated run configuration: the sections every algorithm shares.

Every field is documented; defaults are ddpo-pytorch's or AlignProp's where those projects have
one, otherwise this project's choice (said so). An algorithm's config (``train`` section
included) lives beside its module and subclasses :class:`AlgorithmConfig`. Load from YAML with
:func:`load_config`, which picks the class by the file's ``algorithm``; unknown keys and bad
values are errors that name the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffexp.algorithms.run_identity import DEFAULT_ALGORITHM, set_dotted
from diffexp.exploration import ExplorationConfig
from diffexp.models.lora import LoraSettings
from diffexp.rewards.parts import RewardPart, parse_weights


class StrictConfig(BaseModel):
    """A config section: unknown keys and bad assignments are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # lr=inf is an error


class ModelConfig(StrictConfig):
    pretrained: str = Field(
        description="a registered pipeline name (e.g. 'tiny-sd15'/'tiny-sdxl'/'tiny-sd3', random twins, or a "
        "plugin's), a local diffusers folder, or a cached hub id (SD 1.x/2.x, SDXL, SD3/SD3.5, FLUX.1)",
    )
    dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="weights dtype of the frozen parts (trainable LoRA weights stay fp32)"
    )
    use_lora: bool = Field(
        True, description="train a LoRA adapter (True, ddpo-pytorch default) or the full UNet (False)"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)


class SampleConfig(StrictConfig):
    num_steps: int = Field(50, ge=1, le=1000, description="sampling steps, DDIM or flow (ddpo-pytorch: 50)")
    eta: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="the sampler's noise: DDIM's eta (ddpo-pytorch: 1.0), or on a flow model (SD3, FLUX) the SDE's "
        "noise level (Flow-GRPO: 0.7); DDPO and GRPO need > 0 for a stochastic policy",
    )
    resolution: int | None = Field(
        None,
        ge=8,
        description="image side in pixels (default: the model's, e.g. 512 for SD 1.5, 1024 for SD3.5 and FLUX; "
        "Flow-GRPO trains SD3.5-M at 512)",
    )
    batch_size: int = Field(8, ge=1, description="samples per sampling batch, per device")
    num_batches_per_epoch: int = Field(4, ge=1, description="sampling batches per epoch, per device")
    samples_per_prompt: int = Field(
        1,
        ge=1,
        description="each drawn prompt is sampled this many times in a batch (1: independent draws, as ddpo-pytorch); "
        "more gives the per-prompt stat tracker a group to normalise within, even with many prompts",
    )

    share_group_noise: bool = Field(
        False,
        description="the samples_per_prompt samples of a prompt start from one initial noise (their step noise "
        "still differs); Flow-GRPO's issue #7 reports that such groups explore less: a knob, not a default",
    )

    @model_validator(mode="after")
    def _groups_fill_batches(self):
        if self.batch_size % self.samples_per_prompt:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of samples_per_prompt ({self.samples_per_prompt})"
            )
        return self


class PromptConfig(StrictConfig):
    set: str = Field(description="prompt set name (see `diffexp.prompts.sets`), or 'list'")
    options: dict[str, Any] = Field(
        default_factory=dict, description="options of the set, e.g. {split: train} or {category: Colors}"
    )
    prompts: list[str] = Field(default_factory=list, description="the prompts when set == 'list'")
    eval_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options for the held-out evaluation prompts; default: the prompt set's own "
        "(its registration's heldout_options, e.g. {split: heldout}; none for most sets)",
    )

    @model_validator(mode="before")
    @classmethod
    def _set_heldout_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("eval_options") is None and isinstance(data.get("set"), str):
            from diffexp.prompts.sets import heldout_options

            data = {**data, "eval_options": heldout_options(data["set"])}
        return data


class RewardConfig(StrictConfig):
    name: str | None = Field(None, description="registered reward name (see `diffexp.rewards`)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the reward (e.g. weight paths)"
    )
    weights: dict[str, float | dict[str, Any]] = Field(
        default_factory=dict,
        description="if set, a weighted sum instead of `name`: part -> weight, or part -> "
        "{weight, reward (default: the part's name), and the reward's options}",
    )

    @model_validator(mode="after")
    def _one_reward(self):
        if self.name is None and not self.weights:
            raise ValueError("give reward.name (a registered reward) or reward.weights (a weighted sum)")
        return self

    def parts(self) -> list[RewardPart]:
        """The rewards this config uses: its name at weight 1, or each weighted part."""
        if not self.weights:
            return [RewardPart(self.name, self.name, 1.0, dict(self.options))]
        return parse_weights(self.weights)

    @property
    def single(self) -> str | None:
        """The one registered reward (None for a weighted sum)."""
        return None if self.weights else self.name

    def describe(self) -> str:
        """The reward as a tag: its name, or ``0.5*a+1*b``."""
        if not self.weights:
            return self.name
        return "+".join(f"{p.weight:g}*{p.part}" for p in self.parts())


class RunConfig(StrictConfig):
    name: str = Field("run", description="run name (MLflow run name, folder under output_dir)")
    output_dir: str = Field("runs", description="where checkpoints, logs and images go")
    seed: int = 0
    num_epochs: int = Field(100, ge=1)
    save_every: int = Field(1, ge=1, description="checkpoint every N epochs (the last one is always kept)")
    eval_every: int = Field(5, ge=1, description="held-out evaluation every N epochs (and after the last)")
    eval_at_start: bool = Field(
        True, description="evaluate the base model before the first update: every curve starts at 0 queries"
    )
    eval_num_prompts: int = Field(8, ge=1, description="held-out prompts evaluated")
    eval_samples_per_prompt: int = Field(2, ge=1)
    eval_seed: int = Field(
        12345,
        description="seed of the held-out samples' noise; the same for every run of a study (not run.seed), so "
        "runs are compared on the same prompts and noise and a gain over the base model is a paired difference",
    )
    eval_rewards: list[str] = Field(
        default_factory=list,
        description="more registered rewards that score the held-out samples, logged as "
        "eval_score_<name> (e.g. the reward a run is not trained on); the run's own reward is skipped",
    )
    evaluators: list[str] = Field(
        default_factory=list,
        description="registered evaluators run on the held-out samples, besides those the "
        "prompt set's world registers for it (see diffexp.evaluation)",
    )
    loggers: list[Literal["mlflow", "csv"]] = Field(default_factory=lambda: ["csv"])
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: sqlite:///<output_dir>/mlflow.db"
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; default: the run name")
    mlflow_run_id: str | None = Field(
        None, description="log into this existing MLflow run (the sweep harness creates one per trial)"
    )
    mlflow_tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags for the run")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    accelerator: str = Field("auto", description="Lightning accelerator (cpu, gpu, auto)")
    devices: int = Field(1, ge=1, description="processes/devices (DDP when > 1; gloo on CPU)")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="with devices > 1: 'ddp' (a full replica per device) or 'fsdp' (FSDP2 shards of the denoiser "
        "and a T5 encoder, block by block, for models that outgrow one device, e.g. FLUX.1-dev's 12B transformer)",
    )
    deterministic: bool = Field(False, description="torch deterministic algorithms (exact resume comparisons)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (default: torch's)")
    allow_tf32: bool = Field(
        False,
        description="TF32 matmuls/convolutions on Ampere+ GPUs: faster, but DDPO's replayed PPO ratio then "
        "deviates ~2e-5 from 1 (1.2e-7 without, measured on an H100)",
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _known_store(cls, uri: str | None) -> str | None:
        from diffexp.algorithms.mlflow_run import check_tracking_uri

        return uri if uri is None else check_tracking_uri(uri)

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str) -> str:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"{name!r} must be one folder name inside run.output_dir (no '/', '..' or empty)")
        return name


class TrainConfig(StrictConfig):
    """The optimiser fields every algorithm's ``train`` section has: the base module builds AdamW
    (and its warm-up) from them; an algorithm's section subclasses this one."""

    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate")
    lr_warmup_steps: int = Field(
        0,
        ge=0,
        description="optimiser steps of linear learning-rate warm-up (ddpo-pytorch, AlignProp: none); Adam's "
        "first steps move every weight by about the learning rate, whatever the gradient",
    )
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clipping")


class AlgorithmConfig(StrictConfig):
    """The sections every algorithm's config shares; an algorithm's config subclasses it, sets
    ``algorithm`` to its registered name and adds its ``train`` section (see ``registry``)."""

    algorithm: str
    model: ModelConfig
    sample: SampleConfig = Field(default_factory=SampleConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    prompts: PromptConfig
    reward: RewardConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _names_are_registered(self):
        """Every name the config refers to exists, checked now: before a model loads or a run
        directory is touched (a typo found after minutes of loading SD3 would cost those minutes)."""
        from diffexp.evaluation.evaluators import evaluator_names
        from diffexp.prompts.sets import prompt_set_names
        from diffexp.rewards.base import reward_names

        rewards, problems = set(reward_names()), []
        where = "reward.name" if self.reward.single else "reward.weights."
        wanted = [(where + ("" if self.reward.single else p.part), p.reward) for p in self.reward.parts()]
        wanted += [("run.eval_rewards", name) for name in self.run.eval_rewards]
        problems += [f"{where}: unknown reward {name!r}" for where, name in wanted if name not in rewards]
        if self.prompts.set != "list" and self.prompts.set not in prompt_set_names():
            problems.append(f"prompts.set: unknown prompt set {self.prompts.set!r}; known: {prompt_set_names()}")
        evaluators = set(evaluator_names())
        problems += [f"run.evaluators: unknown evaluator {e!r}" for e in self.run.evaluators if e not in evaluators]
        if problems:
            if any("unknown reward" in p for p in problems):
                problems.append(f"registered rewards: {sorted(rewards)}")
            raise ValueError("; ".join(problems))
        return self

    def batch_arithmetic(self) -> dict[str, int]:
        return {"samples_per_epoch": self.sample.batch_size * self.sample.num_batches_per_epoch * self.run.devices}

    def batch_arithmetic_text(self) -> str:
        """The line a run prints at its start."""
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.batch_arithmetic().items())
        return (
            f"[{self.algorithm}] batch arithmetic: {self.sample.batch_size} samples x "
            f"{self.sample.num_batches_per_epoch} "
            f"batches x {self.run.devices} devices; {detail}"
        )


class ConfigError(ValueError):
    """A config file that cannot be read or validated; the message names the file and the field."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Command-line ``section.field=value`` items -> ``load_config``'s overrides (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None, kind=None):
    """Read a YAML config (or defaults when ``path`` is None), apply dotted overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"config file {path} is not a file (a directory?); give the path of a YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if data is None:  # all defaults would be a 100-epoch run nobody asked for
            raise ConfigError(f"config file {path} is empty; give at least the fields that differ from the defaults")
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must contain a mapping at the top level, got {type(data).__name__}")
        _check_keys(data, str(path))
    for dotted, value in (overrides or {}).items():
        try:
            set_dotted(data, dotted, value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    kind = kind or config_class(data.get("algorithm", DEFAULT_ALGORITHM))
    try:
        return kind(**data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path) if path else "(defaults)")) from None


def _check_keys(data: dict, source: str, prefix: str = "") -> None:
    """Field names must be strings (YAML also allows numbers, null and lists as keys)."""
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"invalid config {source}:\n  {prefix}{key!r}: field names must be strings")
        if isinstance(value, dict):
            _check_keys(value, source, f"{prefix}{key}.")


def config_class(algorithm: str | None = None, *, lenient: bool = False):
    """The config class of a registered algorithm (None: the default algorithm's). ``lenient``: an
    unknown name gets the default's class, for code that only needs the sections (the config's
    validation names the bad algorithm)."""
    from diffexp.algorithms.registry import ALGORITHMS
    from diffexp.registry import UnknownNameError

    try:
        return ALGORITHMS[str(algorithm or DEFAULT_ALGORITHM)].config_class
    except UnknownNameError as err:
        if lenient:
            return ALGORITHMS[DEFAULT_ALGORITHM].config_class
        raise ConfigError(f"algorithm: {err}") from None


#: what ``describe_config`` shows for a field a config must give (no default)
REQUIRED = "<required>"


def describe_config(config: BaseModel | type[BaseModel], indent: int = 0) -> str:
    """The config as YAML-like text with each field's description as a comment; given a config
    class instead of a config, its defaults (a field without one shows as ``<required>``)."""
    lines = []
    pad = "  " * indent
    cls = config if isinstance(config, type) else type(config)
    for name, field in cls.model_fields.items():
        comment = f"  # {field.description}" if field.description else ""
        if not isinstance(config, type):
            value = getattr(config, name)
        elif field.is_required():
            section = field.annotation
            value = section if isinstance(section, type) and issubclass(section, BaseModel) else REQUIRED
        else:
            value = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel) or (isinstance(value, type) and issubclass(value, BaseModel)):
            lines.append(f"{pad}{name}:{comment}")
            lines.append(describe_config(value, indent + 1))
        elif value is REQUIRED:
            lines.append(f"{pad}{name}: {REQUIRED}{comment}")
        else:
            dumped = yaml.safe_dump(
                value if not isinstance(value, tuple) else list(value), default_flow_style=True
            ).strip()
            dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{name}: {dumped}{comment}")
    return "\n".join(lines)
