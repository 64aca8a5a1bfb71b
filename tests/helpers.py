"""Independent references shared by tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
#: what every run config must name (the core has no default model, prompt set or reward), at its cheapest
NAMED = {
    "model.pretrained": "tiny-sd15",
    "prompts.set": "list",
    "prompts.prompts": ["a cat"],
    "reward.name": "brightness",
}


def load_script(relative: str) -> ModuleType:
    """A script of the checkout (not a package module), imported from its path under the root."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_truncated_grads(pipe, params, traj, ks, scale: float) -> torch.Tensor:
    """d(sum of images)/d(params) when sample b backpropagates through only its last ks[b] steps.

    Written with plain diffusers calls (unet + DDIMScheduler.step at eta = 0), restarting each
    sample from its recorded latent K steps before the end, detached: earlier steps cannot contribute.
    """
    for p in params:
        p.grad = None
    steps = traj.latents.shape[1] - 1
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    for b, k in enumerate(ks):
        x = traj.latents[b : b + 1, steps - k].detach()
        cond, uncond = traj.cond.embeds[b : b + 1], traj.uncond.embeds[b : b + 1]
        for t in scheduler.timesteps[steps - k :]:
            out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            u, c = out.chunk(2)
            x = scheduler.step(u + scale * (c - u), t, x, eta=0.0).prev_sample
        image = (pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        image.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return grads


def tiny_open_clip_config(quick_gelu: bool = False) -> dict:
    """An open_clip model config (register it in ``open_clip.factory._MODEL_CONFIGS``) for tiny
    random twins of the CLIP towers that real rewards use, with CLIP's 49408-token vocabulary."""
    config = dict(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, head_width=16, patch_size=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return {**config, "quick_gelu": True} if quick_gelu else config
