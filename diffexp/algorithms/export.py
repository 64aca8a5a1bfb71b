"""Take a trained run out: its adapter in the diffusers LoRA format, or a merged pipeline.

``export_run`` reads the run directory's ``config.yaml`` and last checkpoint, rebuilds the base
pipeline with the trained weights, writes ``pytorch_lora_weights.safetensors`` (rank, alpha and
target modules in its metadata) and ``diffexp_export.json`` (the base model, the adapter's shape,
the run), and with ``merge`` a full pipeline folder that ``from_pretrained`` loads. The file is
then loaded back through plain diffusers and compared with the trained weights: a file that
would load nothing, or something else, is an error, never a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from diffexp.algorithms.checkpointing import CheckpointError, read_checkpoint
from diffexp.algorithms.config import ConfigError, load_config
from diffexp.algorithms.run_record import CONFIG_NAME, last_checkpoint
from diffexp.models import get_pipeline
from diffexp.models.lora import add_lora, lora_state_dict, save_lora
from diffexp.models.pipelines import denoiser_of

LORA_FILE = "pytorch_lora_weights.safetensors"
MANIFEST = "diffexp_export.json"
MERGED_DIR = "pipeline"


class ExportError(ValueError):
    """A run that cannot be exported, or an export that would not load as trained."""


@dataclass
class Exported:
    out: Path
    lora: Path | None
    merged: Path | None
    base_model: str
    reward_queries: int


def load_trained_pipeline(run_dir: str | Path):
    """(config, pipeline with the run's trained weights, checkpoint state) of a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).is_file():
        raise ExportError(f"{run_dir} is not a run directory: no {CONFIG_NAME} (give run.output_dir/run.name)")
    checkpoint = last_checkpoint(run_dir)
    if not checkpoint.is_file():
        raise ExportError(f"{run_dir} has no checkpoint yet ({checkpoint}): train at least one epoch first")
    try:
        config = load_config(run_dir / CONFIG_NAME)
        state = read_checkpoint(checkpoint)
    except (ConfigError, CheckpointError) as err:
        raise ExportError(str(err)) from None
    trained = state["state_dict"]
    if not trained:
        raise ExportError(f"{checkpoint} holds no trained weights")
    if not all(bool(torch.isfinite(v).all()) for v in trained.values()):
        raise ExportError(f"{checkpoint} holds non-finite weights; it cannot be exported")
    pipe = get_pipeline(config.model.pretrained, dtype="fp32")
    if config.model.use_lora:
        from peft import set_peft_model_state_dict

        add_lora(denoiser_of(pipe), config.model.lora)
        set_peft_model_state_dict(denoiser_of(pipe), dict(trained), adapter_name="default")
        _same_weights(lora_state_dict(denoiser_of(pipe)), trained, "the rebuilt adapter")
    else:
        denoiser_of(pipe).load_state_dict({k.removeprefix("unet."): v for k, v in trained.items()})
    return config, pipe, state


def _same_weights(loaded: dict, trained: dict, what: str) -> None:
    if set(loaded) != set(trained):
        missing, extra = sorted(set(trained) - set(loaded))[:3], sorted(set(loaded) - set(trained))[:3]
        raise ExportError(f"{what} does not match the trained weights (missing {missing}, unexpected {extra})")
    worst = max(float((loaded[k].float().cpu() - trained[k].float().cpu()).abs().max()) for k in trained)
    if worst > 0:
        raise ExportError(f"{what} differs from the trained weights (max abs difference {worst:g})")


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False) -> Exported:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    config, pipe, state = load_trained_pipeline(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    lora_path = None
    if config.model.use_lora:
        save_lora(pipe, out)
        lora_path = out / LORA_FILE
        check_lora_file(config.model.pretrained, out, lora_state_dict(denoiser_of(pipe)))
    merged = None
    if merge or not config.model.use_lora:  # a full fine-tune has no adapter: the pipeline is the export
        if config.model.use_lora:
            denoiser_of(pipe).fuse_lora()
            denoiser_of(pipe).unload_lora()
        merged = out / MERGED_DIR
        pipe.save_pretrained(merged, safe_serialization=True)
    lora = config.model.lora
    manifest = {
        "base_model": config.model.pretrained,
        "lora": None
        if not config.model.use_lora
        else {"rank": lora.rank, "alpha": lora.alpha or lora.rank, "target_modules": lora.target_modules},
        "run": Path(run_dir).name,
        "algorithm": config.algorithm,
        "reward": config.reward.describe(),
        "reward_queries": int(state["diffexp"]["reward_queries"]),
        "files": {"lora": lora_path.name if lora_path else None, "merged_pipeline": MERGED_DIR if merged else None},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Exported(out, lora_path, merged, config.model.pretrained, manifest["reward_queries"])


def check_lora_file(base_model: str, folder: Path, trained: dict) -> None:
    """Load ``folder``'s LoRA into a fresh base pipeline with plain diffusers' ``load_lora_weights``
    and require the adapter it builds to equal ``trained``."""
    from peft.utils import get_peft_model_state_dict

    fresh = get_pipeline(base_model, dtype="fp32")
    fresh.load_lora_weights(str(folder), adapter_name="exported")
    adapters = getattr(denoiser_of(fresh), "peft_config", {})
    if "exported" not in adapters:
        raise ExportError(f"{folder / LORA_FILE} loads no adapter into the denoiser with diffusers' load_lora_weights")
    exported = get_peft_model_state_dict(denoiser_of(fresh), adapter_name="exported")
    _same_weights(exported, trained, f"{folder / LORA_FILE}")
