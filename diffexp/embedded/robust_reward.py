"""Stage ``reward_clip_robust``: adversarial fine-tuning of the alignment CLIP, so that its pixel
gradient changes what an image shows rather than imperceptible pixels.

Starting from the ``reward_clip`` stage, every step trains on three kinds of pairs:

* world renders with their captions and one-attribute caption negatives (as ``reward_clip``);
* image-side negatives: the same composition with one object left out or the two objects'
  places swapped, scored against the full caption below the true render (the hole DDPO found:
  a missing object scored above a wrong relation);
* the generator's own samples of the composition prompts, labelled by the ground-truth
  evaluator: within a prompt, correct samples above incorrect ones.

Each image is also perturbed by PGD within an L-infinity ball that maximises the loss, the
perturbed image keeping the clean image's target (Madry et al. 2018; FARE's threat model for
CLIP), and the model trains on the clean and the perturbed batch. ``logit_scale`` stays frozen, so
the reward keeps its units and cannot look robust by shrinking.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffexp.embedded.reward_training import _feat, degrade, hard_negative, world_batch
from diffexp.embedded.rewards import clip_normalise
from diffexp.embedded.scenes import SceneSpec, caption, render, to_tensor
from diffexp.embedded.settings import TrainSettings
from diffexp.embedded.stage_tools import GENERATOR_STAGES, StageCheckpoint, lr_schedule, stage_rng, token_ids


def image_negative(spec: SceneSpec, rng: np.random.Generator) -> SceneSpec:
    """The composition with one object left out, or with the two objects' places swapped."""
    first, second = spec.objects
    choice = rng.integers(3)
    if choice < 2:
        return SceneSpec((spec.objects[choice],), spec.background)
    swapped = (dataclasses.replace(first, centre=second.centre), dataclasses.replace(second, centre=first.centre))
    return SceneSpec(swapped, spec.background, spec.relation)


def generator_pool(settings: TrainSettings, pipe, per_prompt: int) -> dict[str, torch.Tensor]:
    """Samples of every composition prompt at random CFG scales (1-7.5) and 8, 10 or 20 DDIM steps,
    with the evaluator's verdict. Saved with the stage, so a resumed run trains on the same pool."""
    from diffexp.embedded.ground_truth import evaluate
    from diffexp.embedded.measurements import sample_images

    prompts = _pool_prompts()
    rng = stage_rng(settings.seed, "reward_clip_robust-pool", 0)
    images, index = [], []
    for draw in tqdm(range(per_prompt), desc="generator pool", dynamic_ncols=True):
        cfg, steps = float(rng.uniform(1.0, 7.5)), int(rng.choice([8, 10, 20]))
        # noise seeds from 10_000 up: the probes of benchmark/reward_robustness.py use seeds 0 and 11
        images.append(sample_images(pipe, prompts, cfg, steps, seed=10_000 * (settings.seed + 1) + draw))
        index += range(len(prompts))
    images = torch.cat(images)
    correct = torch.from_numpy(evaluate(images, [prompts[i] for i in index]))
    return {"images": (images * 255).round().to(torch.uint8), "prompt": torch.tensor(index), "correct": correct}


def pool_outcomes(pool: dict, n_prompts: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Prompt -> (its correct samples, its incorrect ones), for the prompts that have both."""
    prompt, correct = pool["prompt"].numpy(), pool["correct"].numpy()
    outcomes = {}
    for p in range(n_prompts):
        good, bad = np.flatnonzero((prompt == p) & correct), np.flatnonzero((prompt == p) & ~correct)
        if len(good) and len(bad):
            outcomes[p] = (good, bad)
    if not outcomes:
        raise ValueError("no prompt of the generator pool has both correct and incorrect samples; draw more")
    return outcomes


def pool_pairs(pool: dict, outcomes: dict, prompts: list[str], rng: np.random.Generator, n: int):
    """``n`` (correct, incorrect) sample pairs of one prompt each (see :func:`pool_outcomes`)."""
    chosen = rng.choice(list(outcomes), size=n)
    good = [rng.choice(outcomes[p][0]) for p in chosen]
    bad = [rng.choice(outcomes[p][1]) for p in chosen]
    images = pool["images"][np.concatenate([good, bad])].float() / 255
    return images, [prompts[p] for p in chosen]


def _pool_prompts() -> list[str]:
    """Every composition prompt, both splits: the reward must score held-out pairs too."""
    from diffexp.embedded.prompt_sets import get_prompt_set

    return [p.text for split in ("train", "heldout") for p in get_prompt_set("relations", split)]


def pgd(loss_fn, images: torch.Tensor, eps: float, steps: int, rng: torch.Generator) -> torch.Tensor:
    """L-infinity PGD from a random start: the perturbed images (in [0, 1]) that maximise ``loss_fn``."""
    delta = (torch.rand(images.shape, generator=rng) * 2 - 1) * eps
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn((images + delta).clamp(0, 1)), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    return (images + delta).clamp(0, 1).detach()


def robust_loss(model, images: torch.Tensor, text: torch.Tensor, layout: dict[str, int]) -> torch.Tensor:
    """Contrastive + caption negatives on renders, image negatives, correct-above-incorrect samples.

    ``images`` = [renders | their image negatives | correct pool samples | incorrect pool samples];
    ``text`` = normalised [captions | caption negatives | pool prompts]."""
    n, m, k = layout["renders"], layout["negatives"], layout["pairs"]
    image = F.normalize(_feat(model.get_image_features(pixel_values=clip_normalise(images))), dim=-1)
    scale = model.logit_scale.exp().clamp(max=100)
    render_img, negative_img = image[:n], image[n : n + m]
    good_img, bad_img = image[n + m : n + m + k], image[n + m + k :]
    pos_text, neg_text, pool_text = text[:n], text[n : 2 * n], text[2 * n :]
    logits = scale * render_img @ pos_text.T
    same = layout["same"]
    targets = same / same.sum(1, keepdim=True)
    contrastive = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    pos = (render_img * pos_text).sum(-1)
    caption_neg = F.softplus(scale * ((render_img * neg_text).sum(-1) - pos)).mean()
    # the first m renders are compositions, in the order their image negatives were made
    image_neg = F.softplus(scale * ((negative_img * pos_text[:m]).sum(-1) - pos[:m])).mean()
    pool = F.softplus(scale * ((bad_img * pool_text).sum(-1) - (good_img * pool_text).sum(-1))).mean()
    return contrastive + caption_neg + image_neg + pool


def train_robust_reward_clip(settings: TrainSettings) -> Path:
    ckpt = StageCheckpoint(Path(settings.work_dir) / "reward_clip_robust")
    if ckpt.done:
        return ckpt.dir
    source = Path(settings.work_dir) / "reward_clip" / "model"
    if not (source / "config.json").exists():
        raise FileNotFoundError(f"{source} is missing: the reward_clip stage must finish first")
    from transformers import CLIPModel

    steps, batch, eps = settings.robust_steps, settings.robust_batch, settings.robust_eps
    pairs = batch

    model = CLIPModel.from_pretrained(source, dtype=torch.float32)
    model.logit_scale.requires_grad_(False)
    pool_file = ckpt.dir / "pool.safetensors"
    if not pool_file.exists():
        pool = generator_pool(settings, _generator(settings), settings.robust_pool_draws)
        save_file({k: v.contiguous() for k, v in pool.items()}, str(pool_file))
    pool, prompts = load_file(str(pool_file)), _pool_prompts()
    outcomes = pool_outcomes(pool, len(prompts))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.robust_lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps, warmup=50))
    start, _ = ckpt.load({"clip": model}, opt, sched)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="robust reward clip", dynamic_ncols=True)
    for step in bar:
        rng = stage_rng(settings.seed, "reward_clip_robust", step)
        images, specs = world_batch(rng, batch, composition_fraction=0.75)
        order = sorted(range(batch), key=lambda i: len(specs[i].objects) == 1)  # compositions first
        specs = [specs[i] for i in order]
        images = images[order]
        compositions = [s for s in specs if len(s.objects) == 2]
        negatives = to_tensor(np.stack([render(image_negative(s, rng)) for s in compositions]))
        pool_images, pool_prompts = pool_pairs(pool, outcomes, prompts, rng, pairs)
        clean = torch.cat([degrade(torch.cat([images, negatives]), rng), pool_images])
        captions = [caption(s) for s in specs]
        text_ids = token_ids(captions + [hard_negative(s.labels, rng) for s in specs] + pool_prompts)
        layout = {
            "renders": batch,
            "negatives": len(compositions),
            "pairs": pairs,
            "same": torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32),
        }
        text = F.normalize(_feat(model.get_text_features(input_ids=text_ids)), dim=-1)
        adv = pgd(
            functools.partial(robust_loss, model, text=text.detach(), layout=layout),
            clean,
            eps,
            settings.robust_pgd_steps,
            torch.Generator().manual_seed(int(rng.integers(2**31))),
        )
        clean_loss = robust_loss(model, clean, text, layout)
        adv_loss = robust_loss(model, adv, text, layout)
        loss = clean_loss + adv_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(clean=f"{clean_loss.item():.3f}", adv=f"{adv_loss.item():.3f}")
        if (step + 1) % settings.checkpoint_every == 0:
            ckpt.save(step + 1, {"clip": model}, opt, sched)
    ckpt.save(steps, {"clip": model}, opt, sched)
    model.save_pretrained(ckpt.dir / "model", safe_serialization=True)
    record = {"steps": steps, "eps": eps, "pgd_steps": settings.robust_pgd_steps, "batch": batch}
    ckpt.mark_done({**record, "pool_samples": len(pool["prompt"])})
    return ckpt.dir


def _generator(settings: TrainSettings):
    """The work dir's last finished generator, else the shipped one."""
    from diffexp.embedded.pipeline import load_world_pipeline

    for stage in reversed(GENERATOR_STAGES):
        folder = Path(settings.work_dir) / stage / "pipeline"
        if (Path(settings.work_dir) / stage / "DONE").exists() and (folder / "model_index.json").exists():
            return load_world_pipeline(path=folder)
    return load_world_pipeline()
