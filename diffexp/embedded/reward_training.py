"""Training of the embedded world's reward models: the alignment CLIP, then the aesthetic predictor.

Images are degraded at random (blur, noise) during training so the rewards stay meaningful on
the blurry samples a small diffusion model produces. Both stages checkpoint and resume like the
generator's (:class:`~diffexp.embedded.training.StageCheckpoint`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from diffexp.embedded import architecture
from diffexp.embedded.aesthetic_rule import aesthetic_score
from diffexp.embedded.rewards import AestheticHead, clip_normalise
from diffexp.embedded.scenes import (
    COLOURS,
    SHAPES,
    ObjectLabel,
    SceneLabels,
    caption,
    render,
    sample_spec,
    to_tensor,
)
from diffexp.embedded.settings import TrainSettings
from diffexp.embedded.stage_tools import StageCheckpoint, lr_schedule, stage_rng, token_ids

OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def world_batch(rng: np.random.Generator, n: int, composition_fraction: float = 0.5):
    """Scenes of every combination (held-out ones included: rewards must score them too)."""
    specs = [sample_spec(rng, "composition" if rng.random() < composition_fraction else "single") for _ in range(n)]
    return to_tensor(np.stack([render(s) for s in specs])), specs


def degrade(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random Gaussian blur (sigma up to 1.2 px) and pixel noise (std up to 0.08), per image."""
    out = []
    for image in images:
        sigma = rng.uniform(0.0, 1.2) if rng.random() < 0.7 else 0.0
        if sigma > 0.05:
            radius = 3
            x = torch.arange(-radius, radius + 1, dtype=torch.float32)
            k = torch.exp(-(x**2) / (2 * sigma**2))
            k = (k / k.sum()).view(1, 1, 1, -1)
            img = image.unsqueeze(1)  # channels as batch
            img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), k)
            img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.transpose(-1, -2))
            image = img.squeeze(1)
        if rng.random() < 0.6:
            image = image + float(rng.uniform(0.0, 0.08)) * torch.from_numpy(
                rng.standard_normal(image.shape).astype(np.float32)
            )
        out.append(image.clamp(0, 1))
    return torch.stack(out)


def hard_negative(labels: SceneLabels, rng: np.random.Generator) -> str:
    """A caption that differs from the truth in one attribute: colour, shape, relation or order."""
    objects = list(labels.objects)
    choice = rng.integers(4 if labels.relation else 2)
    if choice == 2:
        return caption(SceneLabels(tuple(objects), OPPOSITE[labels.relation]))
    if choice == 3:
        return caption(SceneLabels(tuple(reversed(objects)), labels.relation))
    i = int(rng.integers(len(objects)))
    colour, shape = objects[i]
    taken = {o.colour for o in objects}
    if choice == 0:
        colour = [c for c in COLOURS if c not in taken][rng.integers(len(COLOURS) - len(taken))]
    else:
        shape = [s for s in SHAPES if s != shape][rng.integers(len(SHAPES) - 1)]
    objects[i] = ObjectLabel(colour, shape)
    return caption(SceneLabels(tuple(objects), labels.relation))


def train_reward_clip(settings: TrainSettings, steps: int = 2000, batch: int = 128, lr: float = 1e-3) -> Path:
    ckpt = StageCheckpoint(Path(settings.work_dir) / "reward_clip")
    if ckpt.done:
        return ckpt.dir
    torch.manual_seed(settings.seed + 1)  # no weights shared with the generator, not even the init
    model = architecture.reward_clip()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps))
    start, _ = ckpt.load({"clip": model}, opt, sched)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="reward clip", dynamic_ncols=True)
    for step in bar:
        rng = stage_rng(settings.seed, "reward_clip", step)
        images, specs = world_batch(rng, batch)
        images = degrade(images, rng)
        captions = [caption(s) for s in specs]
        negatives = [hard_negative(s.labels, rng) for s in specs]
        image = F.normalize(_feat(model.get_image_features(pixel_values=clip_normalise(images))), dim=-1)
        text = F.normalize(_feat(model.get_text_features(input_ids=token_ids(captions + negatives))), dim=-1)
        pos_text, neg_text = text[:batch], text[batch:]
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * image @ pos_text.T
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        targets = same / same.sum(1, keepdim=True)  # repeated captions are all positives
        contrastive = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        hard = F.softplus(scale * ((image * neg_text).sum(-1) - (image * pos_text).sum(-1))).mean()
        loss = contrastive + hard
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{contrastive.item():.3f}", hard=f"{hard.item():.3f}")
        if (step + 1) % settings.checkpoint_every == 0:
            ckpt.save(step + 1, {"clip": model}, opt, sched)
    ckpt.save(steps, {"clip": model}, opt, sched)
    model.save_pretrained(ckpt.dir / "model", safe_serialization=True)
    ckpt.mark_done({"steps": steps})
    return ckpt.dir


def _feat(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _aesthetic_model(settings: TrainSettings):
    """Vision tower + projection initialised from the alignment CLIP, plus the MLP head."""
    from transformers import CLIPModel, CLIPVisionModelWithProjection

    clip = CLIPModel.from_pretrained(Path(settings.work_dir) / "reward_clip" / "model")
    tower = CLIPVisionModelWithProjection(clip.config.vision_config)
    tower.vision_model.load_state_dict(clip.vision_model.state_dict())
    tower.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    return tower, AestheticHead(clip.config.projection_dim)


def aesthetic_data(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, _ = world_batch(rng, n, composition_fraction=0.3)
    images = degrade(images, rng)
    return images, aesthetic_score(images)


def train_aesthetic(settings: TrainSettings, steps: int = 1500, batch: int = 128, lr: float = 5e-4) -> Path:
    """Fit the head on the embedding, fine-tuning the small tower too (a frozen 64-d contrastive
    embedding does not keep the background statistics the rule depends on)."""
    ckpt = StageCheckpoint(Path(settings.work_dir) / "aesthetic")
    if ckpt.done:
        return ckpt.dir
    torch.manual_seed(settings.seed + 2)
    tower, head = _aesthetic_model(settings)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps))
    start, _ = ckpt.load({"tower": tower, "head": head}, opt, sched)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="aesthetic", dynamic_ncols=True)
    for step in bar:
        images, target = aesthetic_data(stage_rng(settings.seed, "aesthetic", step), batch)
        embeds = F.normalize(tower(pixel_values=clip_normalise(images)).image_embeds, dim=-1)
        loss = F.mse_loss(head(embeds), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(mse=f"{loss.item():.3f}")
        if (step + 1) % settings.checkpoint_every == 0:
            ckpt.save(step + 1, {"tower": tower, "head": head}, opt, sched)
    ckpt.save(steps, {"tower": tower, "head": head}, opt, sched)
    r2 = held_out_r2(tower.eval(), head.eval(), settings)
    tower.save_pretrained(ckpt.dir / "model", safe_serialization=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(ckpt.dir / "model" / "head.safetensors"))
    ckpt.mark_done({"steps": steps, "heldout_r2": r2})
    print(f"aesthetic predictor held-out R^2: {r2:.3f}")
    return ckpt.dir


@torch.no_grad()
def held_out_r2(tower, head, settings: TrainSettings, n: int = 2000) -> float:
    images, target = aesthetic_data(stage_rng(settings.seed + 12345, "aesthetic-heldout", 0), n)
    pred = head(F.normalize(tower(pixel_values=clip_normalise(images)).image_embeds, dim=-1))
    return float(1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())
