"""Lazy, offline-first and pickle-safe loading of reward-model weights.

Reward models are large and this project runs offline, so every real reward:

* builds nothing heavy at construction; :class:`LazyReward` loads on the first ``score`` and
  caches the models on the instance, *outside* the module tree so reward weights never end up
  in training checkpoints or optimisers;
* accepts a local file/folder or a Hugging Face hub id for every weight, reading the hub only
  from the local cache unless ``local_files_only=False``;
* raises :class:`RewardWeightsNotFound`, saying what to download, where to put it and which
  argument points to it, when a weight is missing;
* reads checkpoints with safetensors or ``torch.load(weights_only=True)`` only, so a pickle
  carrying code is refused (:class:`UnsafeCheckpoint`) instead of executed.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffexp.rewards.base import Reward

#: ``org/repo`` or ``org/repo/path/in/repo`` (hub ids are only tried when no local path exists).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/\S+)?$")


class RewardWeightsNotFound(FileNotFoundError):
    """A reward's weights are not available locally; the message says how to provide them."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint needs arbitrary code to unpickle; it is refused, never executed."""


@dataclass(frozen=True)
class WeightsSpec:
    """What a weight is, for lookup and for the error message when it is missing."""

    reward: str  #: registry name, e.g. "aesthetic"
    what: str  #: human description, e.g. "LAION improved-aesthetic-predictor head"
    argument: str  #: constructor argument / config option that points to it
    filenames: tuple[str, ...]  #: files looked for, in order, inside a folder or hub repo
    download: str  #: where to get it (URL or ``hf download`` command)
    folder: bool = False  #: a ``from_pretrained`` folder rather than a single file


def missing_weights(spec: WeightsSpec, source: Any, reason: str, local_files_only: bool) -> RewardWeightsNotFound:
    """The actionable error for a weight that could not be found."""
    lines = [
        f"{spec.reward}: {spec.what} not found at {str(source)!r} ({reason}).",
        f"  Download it: {spec.download}",
        (
            f"  Put the folder (holding {', '.join(spec.filenames)}) anywhere on this machine and pass it"
            if spec.folder
            else f"  Put it anywhere on this machine (file name: {' or '.join(spec.filenames)}) and pass the file "
            "or its folder"
        )
        + f" as `{spec.argument}=...` (build_reward({spec.reward!r}, {spec.argument}='/path/...') or the "
        f"`{spec.argument}` option of the reward in the run config); a hub id works once it is in the local "
        "Hugging Face cache.",
    ]
    if local_files_only:
        lines.append("  Downloads are off (local_files_only=True); pass local_files_only=False to fetch from the hub.")
    return RewardWeightsNotFound("\n".join(lines))


def is_hub_id(source: str | Path) -> bool:
    text = str(source)
    return not text.startswith(("/", ".", "~")) and bool(_HUB_ID.match(text))


def resolve_file(source: str | Path, spec: WeightsSpec, *, local_files_only: bool = True) -> Path:
    """A local checkpoint file from a file, a folder holding one of ``spec.filenames``, or a hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in spec.filenames:
            if (path / name).is_file():
                return path / name
        raise missing_weights(spec, source, f"the folder holds none of {list(spec.filenames)}", local_files_only)
    if not is_hub_id(source):
        raise missing_weights(spec, source, "no such file or folder", local_files_only)
    return _hub_file(str(source), spec, local_files_only)


def check_source(source: str | Path, spec: WeightsSpec, *, local_files_only: bool = True) -> str:
    """``source`` as a string if it is an existing local path or looks like a hub id (for ``from_pretrained``)."""
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    if is_hub_id(source):
        return str(source)
    raise missing_weights(spec, source, "no such file or folder", local_files_only)


def _hub_file(source: str, spec: WeightsSpec, local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    org, repo, *rest = source.split("/")
    names = ("/".join(rest),) if rest else spec.filenames
    errors = []
    for name in names:
        try:
            return Path(hf_hub_download(f"{org}/{repo}", name, local_files_only=local_files_only))
        except (OSError, ValueError, EntryNotFoundError) as err:
            errors.append(f"{name}: {type(err).__name__}")
    where = "the local hub cache" if local_files_only else "the hub"
    raise missing_weights(spec, source, f"not in {where}: {'; '.join(errors)}", local_files_only)


@contextlib.contextmanager
def explain_missing(spec: WeightsSpec, source: Any, local_files_only: bool) -> Iterator[None]:
    """Turn the ``OSError`` of a ``from_pretrained`` that found nothing into :class:`RewardWeightsNotFound`."""
    try:
        yield
    except RewardWeightsNotFound:
        raise
    except OSError as err:
        raise missing_weights(
            spec, source, f"{type(err).__name__}: {str(err).splitlines()[0]}", local_files_only
        ) from err


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, safely; unwraps ``{"state_dict": ...}`` and DDP's ``module.`` prefix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpoint(
                f"refusing to load {path}: it needs arbitrary code to unpickle (only tensors are allowed). "
                f"Convert it to safetensors from a trusted environment, or get the file from its official source."
            ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float16"``/``"bfloat16"``/``"float32"`` (as in configs) or a ``torch.dtype``."""
    result = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(result, torch.dtype) or not result.is_floating_point:
        raise ValueError(f"expected a floating-point dtype, got {dtype!r}")
    return result


def frozen(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Inference-only copy placement: eval mode, no parameter gradients (gradients still reach the images)."""
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


class LazyReward(Reward):
    """A reward whose models load on the first :meth:`score`, onto ``device`` or the images' device.

    Subclasses implement :meth:`load` and call :meth:`models` inside :meth:`score`.
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = torch.float32,
        local_files_only: bool = True,
        batch_size: int | None = None,
    ):
        super().__init__()
        self.device = torch.device(device) if device is not None else None
        self.dtype = as_dtype(dtype)
        self.local_files_only = local_files_only
        if batch_size is not None:
            self.batch_size = int(batch_size)
        self._cache: dict[str, Any] = {}  # a plain dict: not registered as submodules

    def load(self, device: torch.device) -> Any:
        """Build the models on ``device`` in ``self.dtype`` (use :func:`frozen`)."""
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return "models" in self._cache

    def models(self, images: torch.Tensor) -> Any:
        if not self.loaded:
            self._cache["models"] = self.load(self.device or images.device)
        return self._cache["models"]
