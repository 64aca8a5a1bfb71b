"""Typed, validated run configuration shared by DDPO and AlignProp.

Every field is documented; defaults are ddpo-pytorch's (DDPO) or AlignProp's where those projects
have one, otherwise this project's choice (said so). Load from YAML with :func:`load_config`;
unknown keys and bad values are errors that name the field.

Batch arithmetic (DDPO), per epoch::

    samples per epoch  = sample.batch_size * sample.num_batches_per_epoch * num_devices
    minibatches        = samples per epoch / (train.batch_size * num_devices)
    optimiser steps    = minibatches / train.gradient_accumulation_steps   (per inner epoch)

and each minibatch backpropagates through ``num_train_timesteps = int(window steps *
train.timestep_fraction)`` denoising steps (the window is ``train.timestep_window`` of the
``sample.num_steps``; all of them by default), accumulated into the same optimiser step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffexp.exploration import ExplorationConfig
from diffexp.models.lora import LoraSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    pretrained: str = Field("embedded", description="'embedded' (shipped world model), 'tiny-sd15'/'tiny-sdxl' (random twins), a local diffusers folder, or a cached hub id")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="weights dtype of the frozen parts (trainable LoRA weights stay fp32)")
    use_lora: bool = Field(True, description="train a LoRA adapter (True, ddpo-pytorch default) or the full UNet (False)")
    lora: LoraSettings = Field(default_factory=LoraSettings)


class SampleConfig(_Strict):
    num_steps: int = Field(50, ge=1, le=1000, description="DDIM steps (ddpo-pytorch: 50)")
    eta: float = Field(1.0, ge=0.0, le=1.0, description="DDIM eta; DDPO needs > 0 for a stochastic policy (ddpo-pytorch: 1.0)")
    batch_size: int = Field(8, ge=1, description="samples per sampling batch, per device")
    num_batches_per_epoch: int = Field(4, ge=1, description="sampling batches per epoch, per device")
    samples_per_prompt: int = Field(
        1, ge=1, description="each drawn prompt is sampled this many times in a batch (1: independent draws, as ddpo-pytorch); "
        "more gives the per-prompt stat tracker a group to normalise within, even with many prompts"
    )

    @model_validator(mode="after")
    def _groups_fill_batches(self):
        if self.batch_size % self.samples_per_prompt:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of samples_per_prompt ({self.samples_per_prompt})")
        return self


class PromptConfig(_Strict):
    set: str = Field("embedded_relations", description="prompt set name (see `diffexp.prompts.sets`), or 'list'")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the set, e.g. {split: train} or {category: Colors}")
    prompts: list[str] = Field(default_factory=list, description="the prompts when set == 'list'")
    eval_options: dict[str, Any] = Field(default_factory=lambda: {"split": "heldout"}, description="options for the held-out evaluation prompts")


class RewardConfig(_Strict):
    name: str = Field("embedded_alignment", description="registered reward name (see `diffexp.rewards`)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the reward (e.g. weight paths)")
    weights: dict[str, float] = Field(default_factory=dict, description="if set, a weighted sum of these rewards instead of `name`")


class StatTrackingConfig(_Strict):
    per_prompt: bool = Field(True, description="normalise advantages per prompt (True) or over the whole batch")
    buffer_size: int = Field(16, ge=1, description="rewards remembered per prompt (ddpo-pytorch: 16)")
    min_count: int = Field(16, ge=1, description="below this many, fall back to batch statistics (ddpo-pytorch: 16)")
    scale: Literal["prompt", "batch"] = Field(
        "prompt", description="divide by each prompt's reward std (ddpo-pytorch) or by one pooled within-prompt std of the batch"
    )


class DDPOTrainConfig(_Strict):
    learning_rate: float = Field(3e-4, gt=0, description="AdamW learning rate (ddpo-pytorch: 3e-4)")
    lr_warmup_steps: int = Field(0, ge=0, description="optimiser steps of linear learning-rate warm-up (ddpo-pytorch: none); "
                                 "Adam's first steps move every weight by about the learning rate, whatever the gradient")
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    batch_size: int = Field(4, ge=1, description="samples per training minibatch, per device")
    gradient_accumulation_steps: int = Field(2, ge=1, description="minibatches accumulated per optimiser step")
    num_inner_epochs: int = Field(1, ge=1, description="passes over each epoch's samples (ddpo-pytorch: 1)")
    timestep_fraction: float = Field(1.0, gt=0, le=1, description="share of the window's steps trained on, drawn at random per sample")
    timestep_window: tuple[float, float] = Field(
        (0.0, 1.0), description="part of each trajectory whose steps may be trained, as fractions of the sampling steps from "
        "the first (noisiest): (0, 0.5) trains only the first half, where the layout is decided (ddpo-pytorch: all steps)")
    step_weighting: Literal["none", "epsilon"] = Field(
        "none", description="weight of each timestep's PPO term: 'none' (ddpo-pytorch) or 'epsilon', which divides it by "
        "the schedule's gain |d mean/d eps| / std_t (normalised to mean 1 over the window) so every step's gradient is in "
        "noise-prediction units; without it the second-to-last step's gain is ~6x the others' (20-step DDIM)")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip range (ddpo-pytorch: 1e-4)")
    adv_clip_max: float = Field(5.0, gt=0, description="advantages are clipped to [-adv_clip_max, adv_clip_max]")
    max_grad_norm: float = Field(1.0, gt=0)
    stat_tracking: StatTrackingConfig = Field(default_factory=StatTrackingConfig)

    @model_validator(mode="after")
    def _window_in_order(self):
        start, end = self.timestep_window
        if not 0 <= start < end <= 1:
            raise ValueError(f"train.timestep_window must satisfy 0 <= start < end <= 1, got {list(self.timestep_window)}")
        return self

    def window_steps(self, num_steps: int) -> range:
        """Indices (0 = the first, noisiest sampling step) of the steps that may be trained."""
        start = math.floor(self.timestep_window[0] * num_steps)
        return range(start, max(start + 1, math.ceil(self.timestep_window[1] * num_steps)))

    def train_steps_per_sample(self, num_steps: int) -> int:
        return max(1, int(len(self.window_steps(num_steps)) * self.timestep_fraction))


class RunConfig(_Strict):
    name: str = Field("run", description="run name (MLflow run name, folder under output_dir)")
    output_dir: str = Field("runs", description="where checkpoints, logs and images go")
    seed: int = 0
    num_epochs: int = Field(100, ge=1)
    save_every: int = Field(1, ge=1, description="checkpoint every N epochs (the last one is always kept)")
    eval_every: int = Field(5, ge=1, description="held-out evaluation every N epochs (and after the last)")
    eval_at_start: bool = Field(True, description="evaluate the base model before the first update: every curve starts at 0 queries")
    eval_num_prompts: int = Field(8, ge=1, description="held-out prompts evaluated")
    eval_samples_per_prompt: int = Field(2, ge=1)
    eval_seed: int = Field(
        12345, description="seed of the held-out samples' noise; the same for every run of a study (not run.seed), so "
        "runs are compared on the same prompts and noise and a gain over the base model is a paired difference")
    eval_rewards: list[str] = Field(
        default_factory=list, description="more registered rewards that score the held-out samples, logged as "
        "eval_score_<name> (e.g. the reward a run is not trained on); the run's own reward is skipped")
    evaluators: list[str] = Field(
        default_factory=list, description="registered evaluators run on the held-out samples, besides those the "
        "prompt set's world registers for it (see diffexp.evaluation)")
    loggers: list[Literal["mlflow", "csv"]] = Field(default_factory=lambda: ["csv"])
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite:///<output_dir>/mlflow.db")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; default: the run name")
    mlflow_run_id: str | None = Field(None, description="log into this existing MLflow run (the sweep harness creates one per trial)")
    mlflow_tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags for the run")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    accelerator: str = Field("auto", description="Lightning accelerator (cpu, gpu, auto)")
    devices: int = Field(1, ge=1, description="processes/devices (DDP when > 1; gloo on CPU)")
    deterministic: bool = Field(False, description="torch deterministic algorithms (exact resume comparisons)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (default: torch's)")
    allow_tf32: bool = Field(
        False, description="TF32 matmuls/convolutions on Ampere+ GPUs: faster, but DDPO's replayed PPO ratio then "
        "deviates ~2e-5 from 1 (1.2e-7 without, measured on an H100)")


class DDPOConfig(_Strict):
    """A DDPO run."""

    algorithm: Literal["ddpo"] = "ddpo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    train: DDPOTrainConfig = Field(default_factory=DDPOTrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _batch_arithmetic(self):
        if self.sample.eta == 0:
            raise ValueError("sample.eta must be > 0 for DDPO: with eta = 0 DDIM is deterministic and has no log-probability")
        samples = self.sample.batch_size * self.sample.num_batches_per_epoch
        per_step = self.train.batch_size * self.train.gradient_accumulation_steps
        if samples % self.train.batch_size:
            raise ValueError(
                f"sample.batch_size * sample.num_batches_per_epoch ({samples}) must be a multiple of train.batch_size ({self.train.batch_size})"
            )
        if samples % per_step:
            raise ValueError(
                f"samples per epoch per device ({samples}) must be a multiple of train.batch_size * "
                f"train.gradient_accumulation_steps ({per_step}) so that an optimiser step ends each inner epoch"
            )
        return self

    def batch_arithmetic(self) -> dict[str, int]:
        devices = self.run.devices
        samples = self.sample.batch_size * self.sample.num_batches_per_epoch * devices
        minibatches = samples // (self.train.batch_size * devices)
        return {
            "samples_per_epoch": samples,
            "minibatches_per_inner_epoch": minibatches,
            "optimizer_steps_per_epoch": self.train.num_inner_epochs * minibatches // self.train.gradient_accumulation_steps,
            "train_timesteps_per_sample": self.train.train_steps_per_sample(self.sample.num_steps),
        }


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
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must contain a mapping at the top level, got {type(data).__name__}")
        _check_keys(data, str(path))
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
        node[leaf] = value
    kind = kind or config_class(data.get("algorithm", "ddpo"))
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


def config_class(algorithm: str):
    if algorithm == "ddpo":
        return DDPOConfig
    if algorithm == "alignprop":
        from diffexp.algorithms.alignprop import AlignPropConfig

        return AlignPropConfig
    raise ConfigError(f"algorithm: unknown algorithm {algorithm!r}; choose 'ddpo' or 'alignprop'")


def describe_config(config: BaseModel, indent: int = 0) -> str:
    """The config as YAML-like text with each field's description as a comment."""
    lines = []
    pad = "  " * indent
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        comment = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{comment}")
            lines.append(describe_config(value, indent + 1))
        else:
            dumped = yaml.safe_dump(value if not isinstance(value, tuple) else list(value), default_flow_style=True).strip()
            dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{name}: {dumped}{comment}")
    return "\n".join(lines)
