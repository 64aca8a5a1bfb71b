"""Budgets of the embedded world's training stages (a light module: the CLI reads it for --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    """Budgets of each stage (defaults: the shipped model's run)."""

    work_dir: str = "runs/embedded-train"
    seed: int = 0
    composition_fraction: float = 0.2  # compositions are rarer, like "a dolphin riding a bike" on the web
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-4
    dataset_size: int = 80_000  # images pre-encoded to latents for the generator stage
    gen_steps: int = 4000
    gen_batch: int = 64
    gen_lr: float = 5e-4
    finetune_steps: int = 1000
    finetune_lr: float = 2e-4
    finetune_composition_share: float = 0.4  # second phase: compositions shown more often (still a minority)
    refine_steps: int = 2000
    refine_lr: float = 2e-4
    refine_composition_share: float = 0.5  # third phase: half compositions, so relations are learnt in part
    caption_noise: float = (
        0.1  # third phase: a random other caption, as web captions often mismatch (CFG then sharpens)
    )
    context_steps: int = 1000
    context_lr: float = 2e-4
    context_length: int = 12  # fourth phase: text context cut from 77 tokens to 12 (the longest caption has 10)
    context_ema_decay: float = 0.995  # a fresh EMA for the fourth phase: the 77-token weights must not linger
    context_locality_weight: float = 0.1  # fourth phase: pull the second object's token states toward its own caption's
    robust_steps: int = 800  # adversarial fine-tuning of the alignment CLIP (stage reward_clip_robust)
    robust_batch: int = 64  # world renders a step, and as many (correct, incorrect) generator-sample pairs
    robust_lr: float = 2e-4
    robust_eps: float = 0.06  # L-infinity radius of the PGD perturbation, in [0, 1] pixel units
    robust_pgd_steps: int = 3
    robust_pool_draws: int = 24  # generator samples per composition prompt
    caption_dropout: float = 0.1  # empty caption -> the unconditional branch CFG needs
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    threads: int = 2

    def __post_init__(self):
        """Counts and sizes must be usable: 0 steps would mark a stage done without training it."""
        for name, value in vars(self).items():
            if name.endswith(("_steps", "_batch", "_size", "_every", "_length", "_draws")) or name == "threads":
                if value < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
            elif name.endswith(("_lr", "_decay", "_weight", "_fraction", "_share", "_noise", "_dropout", "_eps")):
                if not value >= 0 or value != value or value == float("inf"):
                    raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
