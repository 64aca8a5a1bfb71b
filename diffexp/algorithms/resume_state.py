"""What a checkpoint holds besides Lightning's own state, and how a resume restores it: the
trainable weights (LoRA keys or the whole denoiser, whole tensors under FSDP), reward queries,
metrics held back from MLflow, and every random state (the run's three streams, torch, numpy,
Python's), per process under DDP, so that a resumed run continues as an unbroken one would."""

from __future__ import annotations

import json
import random

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from diffexp.algorithms import sharding
from diffexp.algorithms.stopping import NonFiniteError
from diffexp.models.lora import lora_state_dict


def save(module: L.LightningModule, checkpoint: dict) -> None:
    """The trainable weights (whole tensors, checked finite) and everything a resume needs."""
    if module.config.model.use_lora:
        trainable = lora_state_dict(module.denoiser)  # peft's key names; restored by restore()
    else:
        trainable = {f"unet.{k}": v for k, v in module.denoiser.state_dict().items()}
    trainable = {k: sharding.full(v) for k, v in trainable.items()}  # whole tensors (FSDP: a collective)
    if not all(bool(torch.isfinite(v).all()) for v in trainable.values()):  # never a NaN "last good" state
        raise NonFiniteError(f"epoch {module.current_epoch}: refusing to checkpoint non-finite trainable weights")
    checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in trainable.items()}
    held_back = [  # see RunMLFlowLogger.recover: a kill between this write and the commit loses nothing
        {"metrics": dict(m), "step": int(step)}
        for logger in module.loggers
        for m, step in getattr(logger, "pending", [])
    ]
    checkpoint["diffexp"] = {
        "config": json.dumps(module.config.model_dump(mode="json")),
        "held_back_metrics": held_back,
        "reward_queries": module.reward_queries,
        "random_streams": module.streams.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": _numpy_state(),
        "python_rng": _python_state(),
        "extra": module.extra_state(),
    }
    if module.world_size > 1:  # each process's own random streams (a resume must continue every one)
        own = {k: checkpoint["diffexp"][k] for k in ("random_streams", "torch_rng", "extra")}
        every = [None] * module.world_size
        dist.all_gather_object(every, own)
        checkpoint["diffexp"]["per_rank"] = every


def load_trainable(module: L.LightningModule, state_dict: dict) -> None:
    """Trainable weights as ``on_save_checkpoint`` stores them (LoRA keys, or ``unet.``-prefixed)."""
    if module.config.model.use_lora and module.sharded:  # into the shards, by the adapter's parameter names
        params = {n.replace(".default.", "."): p for n, p in module.denoiser.named_parameters() if "lora_" in n}
        sharding.load_full_into(params, state_dict)
    elif module.config.model.use_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(module.denoiser, state_dict, adapter_name="default")
    else:
        module.denoiser.load_state_dict({k.removeprefix("unet."): v for k, v in state_dict.items()})


def restore(module: L.LightningModule, checkpoint: dict) -> None:
    """What :func:`save` wrote, back into ``module`` (this process's own streams under DDP)."""
    state = checkpoint["diffexp"]
    per_rank = state.get("per_rank") or []
    if len(per_rank) == module.world_size > 1:
        state = {**state, **per_rank[module.global_rank]}
    if module.config.model.use_lora:
        module.load_trainable(checkpoint["state_dict"])
        checkpoint["state_dict"] = {}
    module.reward_queries = int(state["reward_queries"])
    module._held_back_metrics = [(m["metrics"], m["step"]) for m in state.get("held_back_metrics", [])]
    if module._trainer is not None and module.global_rank == 0:
        for logger in module.loggers:  # epochs past the checkpoint are re-run: drop their rows
            if hasattr(logger, "truncate_after"):
                logger.truncate_after(module.reward_queries)
    if "random_streams" not in state:
        raise ValueError(
            "the checkpoint was written before each run had separate prompt, noise and exploration "
            "streams (common random numbers across arms); start the run over with --restart"
        )
    module.streams.load_state_dict(state["random_streams"])
    module._restored_generator = True
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(_numpy_unpack(state["numpy_rng"]))
    random.setstate(_python_unpack(state["python_rng"]))
    module.load_extra_state(state["extra"])


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }


def _numpy_unpack(state: dict):
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_unpack(state: dict):
    return (state["version"], tuple(state["internal"]), state["gauss"])
