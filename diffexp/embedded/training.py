"""Training of the embedded world's models: VAE -> generator (UNet + text encoder) -> reward CLIP
(-> its adversarial fine-tuning) -> aesthetic head.

Run with ``diffexp embedded train`` (see ``--help``). Each stage checkpoints into
``<work_dir>/<stage>/`` every few hundred steps (atomically) and resumes from there; a finished
stage is skipped. Data is procedural: the batch of step ``s`` is drawn from a generator seeded
with ``(seed, stage, s)``, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from tqdm.auto import tqdm

from diffexp.embedded import architecture
from diffexp.embedded.scenes import SceneLabels, caption, parse_caption, sample_training_batch, to_tensor
from diffexp.embedded.settings import TrainSettings
from diffexp.embedded.stage_tools import (
    StageCheckpoint,
    atomic_save_tensors,
    lr_schedule,
    stage_rng,
    token_ids,
)
from diffexp.models.tokenizer import MODEL_MAX_LENGTH, clip_tokenizer


# -- stage 1: the VAE -----------------------------------------------------------------------
def train_vae(settings: TrainSettings) -> Path:
    ckpt = StageCheckpoint(Path(settings.work_dir) / "vae")
    if ckpt.done:
        return ckpt.dir
    torch.manual_seed(settings.seed)
    vae = architecture.vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(settings.vae_steps))
    start, _ = ckpt.load({"vae": vae}, opt, sched)
    bar = tqdm(
        range(start, settings.vae_steps), initial=start, total=settings.vae_steps, desc="vae", dynamic_ncols=True
    )
    for step in bar:
        images, _, _ = sample_training_batch(
            stage_rng(settings.seed, "vae", step), settings.vae_batch, settings.composition_fraction
        )
        x = to_tensor(images) * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = rec + settings.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", kl=f"{kl.item():.2f}")
        if (step + 1) % settings.checkpoint_every == 0:
            ckpt.save(step + 1, {"vae": vae}, opt, sched)
    ckpt.save(settings.vae_steps, {"vae": vae}, opt, sched)
    vae.save_pretrained(ckpt.dir / "model")
    ckpt.mark_done({"steps": settings.vae_steps, "reconstruction_accuracy": _reconstruction_accuracy(vae, settings)})
    return ckpt.dir


@torch.no_grad()
def _reconstruction_accuracy(vae, settings: TrainSettings, n: int = 400) -> float:
    """Ground-truth accuracy of VAE reconstructions: an upper bound for the generator."""
    from diffexp.embedded.ground_truth import evaluate

    images, captions, _ = sample_training_batch(stage_rng(settings.seed, "vae-eval", 0), n, 0.5)
    recon = vae.decode(vae.encode(to_tensor(images) * 2 - 1).latent_dist.mode()).sample
    accuracy = float(evaluate((recon / 2 + 0.5).clamp(0, 1), captions).mean())
    print(f"VAE reconstruction ground-truth accuracy: {accuracy:.3f}")
    return accuracy


def _load_vae(settings: TrainSettings):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(settings.work_dir) / "vae" / "model").eval()


# -- stage 2: the dataset of latents ---------------------------------------------------------
@torch.no_grad()
def encode_dataset(settings: TrainSettings) -> Path:
    """Render ``dataset_size`` training scenes and store their VAE posteriors (mean, std) + captions."""
    out = Path(settings.work_dir) / "latents"
    if (out / "DONE").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    vae = _load_vae(settings)
    chunk = 500
    means, stds, captions = [], [], []
    for i in tqdm(range(0, settings.dataset_size, chunk), desc="encode", dynamic_ncols=True):
        images, caps, _ = sample_training_batch(
            stage_rng(settings.seed, "data", i), chunk, settings.composition_fraction
        )
        posterior = vae.encode(to_tensor(images) * 2 - 1).latent_dist
        means.append(posterior.mean.half())
        stds.append(posterior.std.half())
        captions += caps
    mean, std = torch.cat(means), torch.cat(stds)
    # SD practice: scale latents to unit variance for the diffusion model.
    scaling = 1.0 / mean.float().std().item()
    atomic_save_tensors({"mean": mean, "std": std}, out / "latents.safetensors")
    (out / "captions.json").write_text(json.dumps(captions))
    (out / "DONE").write_text(json.dumps({"scaling_factor": scaling, "size": len(captions)}))
    return out


# -- stage 3: the generator -------------------------------------------------------------------
def train_generator(settings: TrainSettings) -> Path:
    """Latent diffusion training of UNet + text encoder (jointly), with caption dropout and EMA."""
    return _train_denoiser(settings, "generator", settings.gen_steps, settings.gen_lr, composition_share=None)


def finetune_generator(settings: TrainSettings) -> Path:
    """A short second phase that shows compositions more often (``finetune_composition_share``),
    continuing from the first phase's weights and EMA: after it the base model still fails most
    compositions, as SD fails "a dolphin riding a bike", but not all of them."""
    return _train_denoiser(
        settings,
        "generator_finetune",
        settings.finetune_steps,
        settings.finetune_lr,
        composition_share=settings.finetune_composition_share,
        init_stage="generator",
    )


def refine_generator(settings: TrainSettings) -> Path:
    """A third phase with half compositions and caption noise (``caption_noise``: a random other
    caption, as web captions often mismatch their image). The noise is what makes CFG matter here
    as it does in SD: the conditional model alone puts some mass on mismatched images, and
    guidance pushes samples back toward the caption."""
    return _train_denoiser(
        settings,
        "generator_refine",
        settings.refine_steps,
        settings.refine_lr,
        composition_share=settings.refine_composition_share,
        init_stage="generator_finetune",
        caption_noise=settings.caption_noise,
    )


def shorten_context(settings: TrainSettings) -> Path:
    """A fourth phase that cuts the text context from 77 tokens to ``context_length`` (12; the
    longest caption has 10), continuing UNet + text encoder jointly from the third phase's EMA
    weights with a fresh, faster EMA (``context_ema_decay``).

    Why: with 77 tokens the UNet read the caption mostly from the ~67 padding states after the end
    token (0.775 of its cross-attention mass; the causal encoder, trained jointly, puts a summary of
    the whole caption there), so up-weighting one object's phrase with compel barely reached the
    UNet and weighting the second object lowered its presence. With 12 tokens it reads the words
    themselves (benchmark/probes/embedded_token_attention.py; figures in the model card).

    The causal encoder still let the second object's token states encode mostly the first object
    and the relation (cosine 0.27 with the object's own caption), so weighting that phrase scaled
    the caption rather than the object and did not raise its presence. ``context_locality_weight``
    adds ``1 - second_object_locality`` to the loss, which keeps those states the object's own
    (cosine 0.997); the relation is still read from the relation words and the end token."""
    return _train_denoiser(
        settings,
        "generator_context",
        settings.context_steps,
        settings.context_lr,
        composition_share=settings.refine_composition_share,
        init_stage="generator_refine",
        caption_noise=settings.caption_noise,
        context_length=settings.context_length,
        restart_ema_decay=settings.context_ema_decay,
        locality_weight=settings.context_locality_weight,
    )


def _is_composition(caption: str) -> bool:
    return any(f" {r} " in caption for r in ("above", "below", "left of", "right of"))


def _last_tokens(ids: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) indices of the last ``counts[i]`` tokens before row i's end token."""
    eos = clip_tokenizer().eos_token_id
    rows, cols = [], []
    for i, k in enumerate(counts):
        end = ids[i, 1:].tolist().index(eos) + 1  # padding may repeat the end token
        rows += [i] * k
        cols += range(end - k, end)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def second_object_locality(text_encoder, texts: list[str], states: torch.Tensor, context_length: int) -> torch.Tensor:
    """Mean cosine similarity between the second object's phrase tokens ("blue square") in each
    composition caption of ``texts`` and the same tokens in that object's own caption ("a blue
    square"), which is detached: the target the composition's states are pulled toward. NaN if
    ``texts`` has no composition.

    Why: the text encoder is causal, so without this the second object's states mostly encode the
    first object and the relation (cosine 0.27), and compel's weight on that phrase scales the whole
    caption rather than the object. The first object's states equal its own caption's already."""
    comps = [(i, parse_caption(t)) for i, t in enumerate(texts) if _is_composition(t)]
    if not comps:
        return states.new_tensor(float("nan"))
    tokenizer = clip_tokenizer()
    counts = [len(tokenizer(labels.objects[1].phrase, add_special_tokens=False).input_ids) for _, labels in comps]
    alone_texts = [caption(SceneLabels((labels.objects[1],))) for _, labels in comps]
    rows, cols = _last_tokens(token_ids([texts[i] for i, _ in comps], context_length), counts)
    inside = states[torch.tensor([i for i, _ in comps])][rows, cols]
    with torch.no_grad():
        alone_ids = token_ids(alone_texts, context_length)
        alone = text_encoder(alone_ids).last_hidden_state
    a_rows, a_cols = _last_tokens(alone_ids, counts)
    return F.cosine_similarity(inside, alone[a_rows, a_cols], dim=-1).mean()


def _train_denoiser(
    settings: TrainSettings,
    stage: str,
    steps: int,
    lr: float,
    composition_share: float | None,
    init_stage: str | None = None,
    caption_noise: float = 0.0,
    context_length: int = MODEL_MAX_LENGTH,
    restart_ema_decay: float | None = None,
    locality_weight: float = 0.0,
) -> Path:
    """Latent-diffusion training of UNet + text encoder, continuing from ``init_stage`` if given.
    ``restart_ema_decay``: start from ``init_stage``'s EMA weights with a fresh EMA of this decay
    (for a phase whose input changes, here the context length) instead of continuing its EMA.
    ``locality_weight``: weight of ``1 - second_object_locality`` added to the denoising loss."""
    ckpt = StageCheckpoint(Path(settings.work_dir) / stage)
    if ckpt.done:
        return ckpt.dir
    data_dir = Path(settings.work_dir) / "latents"
    latents = load_file(str(data_dir / "latents.safetensors"))
    captions = json.loads((data_dir / "captions.json").read_text())
    scaling = json.loads((data_dir / "DONE").read_text())["scaling_factor"]
    is_comp = torch.tensor([_is_composition(c) for c in captions])
    pools = (torch.nonzero(~is_comp).flatten(), torch.nonzero(is_comp).flatten())
    torch.manual_seed(settings.seed)
    unet, text_encoder = architecture.unet(), architecture.text_encoder()
    noise_sched = architecture.scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    modules = {"unet": unet, "text_encoder": text_encoder}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps))
    restart_ema = restart_ema_decay is not None
    init = None  # the previous stage's weights, when this one starts (not resumes) from them
    if init_stage is not None and not (ckpt.dir / "state.pt").exists():
        init = load_file(str(Path(settings.work_dir) / init_stage / "weights.safetensors"))
    if init is not None and restart_ema:
        _copy_ema_weights(init, params)
    ema = EMAModel(params, decay=restart_ema_decay if restart_ema else settings.ema_decay)
    modules["ema"] = _TensorHolder(ema.shadow_params)
    if init is not None and not restart_ema:
        for name, module in modules.items():
            module.load_state_dict({k[len(name) + 1 :]: v for k, v in init.items() if k.startswith(name + ".")})
    start, _ = ckpt.load(modules, opt, sched)
    # optimiser steps taken before each stage (EMA warm-up continues across stages unless restarted)
    earlier = {
        None: 0,
        "generator": settings.gen_steps,
        "generator_finetune": settings.gen_steps + settings.finetune_steps,
        "generator_refine": settings.gen_steps + settings.finetune_steps + settings.refine_steps,
    }
    ema.optimization_step = start + (0 if restart_ema else earlier[init_stage])
    alphas = noise_sched.alphas_cumprod
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=stage, dynamic_ncols=True)
    for step in bar:
        g = torch.Generator().manual_seed(
            settings.seed * 1_000_003 + step + 7_777_777 * list(earlier).index(init_stage)
        )
        if composition_share is None:
            idx = torch.randint(0, len(captions), (settings.gen_batch,), generator=g)
        else:
            comp = torch.rand(settings.gen_batch, generator=g) < composition_share
            pick = [pools[int(c)][torch.randint(len(pools[int(c)]), (1,), generator=g)] for c in comp]
            idx = torch.cat(pick)
        z0 = (
            latents["mean"][idx].float()
            + latents["std"][idx].float() * torch.randn(settings.gen_batch, 4, 8, 8, generator=g)
        ) * scaling
        texts = [
            "" if torch.rand(1, generator=g).item() < settings.caption_dropout else captions[i] for i in idx.tolist()
        ]
        if caption_noise:
            swap = torch.rand(len(texts), generator=g) < caption_noise
            others = torch.randint(len(captions), (len(texts),), generator=g)
            texts = [captions[int(o)] if s and t else t for t, s, o in zip(texts, swap.tolist(), others)]
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (settings.gen_batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        emb = text_encoder(token_ids(texts, context_length)).last_hidden_state
        loss = F.mse_loss(unet(zt, t, emb).sample, noise)
        postfix = {"loss": f"{loss.item():.4f}"}
        if locality_weight:
            locality = second_object_locality(text_encoder, texts, emb, context_length)
            if not torch.isnan(locality):
                loss = loss + locality_weight * (1 - locality)
                postfix["locality"] = f"{locality.item():.3f}"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        bar.set_postfix(**postfix, lr=f"{sched.get_last_lr()[0]:.1e}")
        if (step + 1) % settings.checkpoint_every == 0:
            ckpt.save(step + 1, modules, opt, sched)
    ckpt.save(steps, modules, opt, sched)
    ema.copy_to(params)  # ship the EMA weights
    save_world_pipeline(settings, unet, text_encoder, ckpt.dir / "pipeline", scaling, context_length)
    ckpt.mark_done(
        {
            "steps": steps,
            "composition_share": composition_share,
            "caption_noise": caption_noise,
            "lr": lr,
            "context_length": context_length,
            "locality_weight": locality_weight,
        }
    )
    return ckpt.dir


def _copy_ema_weights(tensors: dict[str, torch.Tensor], params: list[torch.Tensor]) -> None:
    """Set ``params`` (UNet then text encoder, as checkpointed) to a checkpoint's EMA weights."""
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"ema.{i}"])


class _TensorHolder(torch.nn.Module):
    """Lets a list of tensors (EMA shadow weights) be checkpointed like a module."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        self._tensors = tensors

    def state_dict(self, *args, **kwargs):
        return {str(i): t for i, t in enumerate(self._tensors)}

    def load_state_dict(self, state, strict=True):
        for i, t in enumerate(self._tensors):
            t.copy_(state[str(i)])


def save_world_pipeline(
    settings: TrainSettings, unet, text_encoder, out: Path, scaling: float, context_length: int = MODEL_MAX_LENGTH
) -> None:
    """Assemble and ``save_pretrained`` a StableDiffusionPipeline (fp16 weights: quality holds, half
    the size). The tokenizer's ``model_max_length`` is the context the generator was trained with:
    the pipeline and compel pad prompts to it."""
    from diffusers import StableDiffusionPipeline

    vae = _load_vae(settings)
    vae.register_to_config(scaling_factor=scaling)
    tokenizer = copy.deepcopy(clip_tokenizer())  # the cached one is shared
    tokenizer.model_max_length = context_length
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=architecture.scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)


#: Stages that run only when named in ``--stages``: the shipped models were trained without them.
OPT_IN_STAGES = ("reward_clip_robust",)


def stages() -> dict:
    """The stages in order (reward stages live in their own modules)."""
    from diffexp.embedded.reward_training import train_aesthetic, train_reward_clip
    from diffexp.embedded.robust_reward import train_robust_reward_clip

    return {
        "vae": train_vae,
        "latents": encode_dataset,
        "generator": train_generator,
        "generator_finetune": finetune_generator,
        "generator_refine": refine_generator,
        "generator_context": shorten_context,
        "reward_clip": train_reward_clip,
        "reward_clip_robust": train_robust_reward_clip,
        "aesthetic": train_aesthetic,
    }


def train(settings: TrainSettings, only: list[str] | None = None) -> None:
    torch.set_num_threads(settings.threads)
    Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    (Path(settings.work_dir) / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    all_stages = stages()
    unknown = set(only or []) - set(all_stages)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages: {list(all_stages)}")
    for name, fn in all_stages.items():
        if (only and name not in only) or (not only and name in OPT_IN_STAGES):
            continue
        t0 = time.time()
        fn(settings)
        print(f"stage {name}: {time.time() - t0:.0f} s")


def seed_from_shipped(settings: TrainSettings, pipeline_dir: Path, through: str = "generator_finetune") -> None:
    """Start a work dir from a shipped pipeline instead of retraining the stages up to ``through``:
    its VAE becomes the ``vae`` stage and its UNet + text encoder (also as the EMA) the finished
    ``through`` stage, so later stages continue from it. (fp16 weights, upcast.)"""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    work = Path(settings.work_dir)
    vae_stage = StageCheckpoint(work / "vae")
    if not vae_stage.done:
        vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae", torch_dtype=torch.float32)
        vae.save_pretrained(vae_stage.dir / "model")
        vae_stage.mark_done({"seeded_from": str(pipeline_dir)})
    stage = StageCheckpoint(work / through)
    if stage.done:
        return
    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", torch_dtype=torch.float32)
    tensors = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    tensors.update({f"text_encoder.{k}": v for k, v in text_encoder.state_dict().items()})
    params = list(unet.parameters()) + list(text_encoder.parameters())
    tensors.update({f"ema.{i}": p.detach().clone() for i, p in enumerate(params)})
    atomic_save_tensors(tensors, stage.dir / "weights.safetensors")
    stage.mark_done({"seeded_from": str(pipeline_dir)})
