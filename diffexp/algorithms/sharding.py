"""Fully sharded data parallelism (FSDP2) for models that outgrow one device's memory.

``run.strategy: fsdp`` runs Lightning's ``ModelParallelStrategy``: every process holds a 1/N shard
of each parameter, and a block's parameters are gathered only while the block runs. What is sharded:

- the denoiser, block by block (UNet down/mid/up blocks; SD3's and FLUX's transformer blocks), then
  the rest of it as one unit: its frozen weights and the LoRA adapter inside each block alike;
- a T5 text encoder, block by block (frozen; 4.8B parameters in SD3's and FLUX's);
- not the VAE, the CLIP encoders or the reward model: small next to the rest, replicated.

Gradients are reduce-scattered by FSDP in every backward pass (the manual all-reduce of DDP is
skipped); checkpoints hold the full LoRA weights, gathered on every process and written by the first.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def _blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a UNet, an MMDiT/FLUX transformer or a T5 encoder."""
    blocks: list[torch.nn.Module] = []
    for name in ("down_blocks", "up_blocks", "transformer_blocks", "single_transformer_blocks"):
        blocks += list(getattr(module, name, None) or [])
    if getattr(module, "mid_block", None) is not None:
        blocks.append(module.mid_block)
    encoder = getattr(module, "encoder", None)
    blocks += list(getattr(encoder, "block", None) or [])  # T5
    return blocks


def shard(module: torch.nn.Module, mesh) -> torch.nn.Module:
    """FSDP2 on each block of ``module``, then on ``module`` as the root unit (in place)."""
    from torch.distributed.fsdp import fully_shard

    blocks = _blocks(module)
    if not blocks:
        raise ValueError(f"no blocks to shard in {type(module).__name__}")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def shard_pipeline(pipe, denoiser: torch.nn.Module, mesh) -> None:
    shard(denoiser, mesh)
    for name in ("text_encoder_3", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None and type(encoder).__name__ == "T5EncoderModel":
            shard(encoder, mesh)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every process must call it), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor, or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def load_full_into(params: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors ``values`` into (possibly sharded) parameters of the same names."""
    with torch.no_grad():
        for name, value in values.items():
            target = params[name]
            value = value.to(dtype=target.dtype)
            if isinstance(target, DTensor):
                value = distribute_tensor(value.to(target.device), target.device_mesh, target.placements)
            target.copy_(value)


def sharded_strategy(devices: int, backend: str):
    """Lightning's FSDP2 strategy with this project's checkpoint layout: one file whose ``state_dict``
    is the trainable weights only (the module's ``on_save_checkpoint`` writes them), not the whole
    model's weights, which Lightning would gather on every save (a 12B transformer's, for FLUX)."""
    from pathlib import Path

    from lightning.pytorch.strategies import ModelParallelStrategy

    class TrainableOnlyModelParallel(ModelParallelStrategy):
        def lightning_module_state_dict(self) -> dict:
            return {}

        def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict:
            path = Path(self.broadcast(checkpoint_path))
            trainable = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            checkpoint = super().load_checkpoint(path, weights_only=weights_only)  # optimiser states
            checkpoint["state_dict"] = trainable  # loaded into the shards by the module's on_load_checkpoint
            return checkpoint

    return TrainableOnlyModelParallel(
        data_parallel_size=devices,
        tensor_parallel_size=1,
        save_distributed_checkpoint=False,
        process_group_backend=backend,
    )
