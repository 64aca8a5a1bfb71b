"""``diffexp embedded ...``: train, evaluate and ship the embedded world's models."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import fields
from pathlib import Path

from diffexp.embedded import WEIGHTS_DIR
from diffexp.embedded.settings import TrainSettings

MEASUREMENTS = ("prompt_following", "cfg_premise", "phrase_premise", "alignment_reward", "aesthetic_reward")


def add_embedded_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embedded", help="train, evaluate and ship the embedded world's models")
    actions = p.add_subparsers(dest="action", required=True)

    train = actions.add_parser("train", help="train VAE, generator, alignment CLIP and aesthetic predictor (resumable)")
    for f in fields(TrainSettings):
        train.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f"(default {f.default})"
        )
    train.add_argument(
        "--stages",
        nargs="*",
        help="only these stages (vae latents generator generator_finetune generator_refine generator_context "
        "reward_clip reward_clip_robust aesthetic); reward_clip_robust, the alignment CLIP's adversarial "
        "fine-tuning, runs only when named (the shipped reward was trained without it)",
    )
    train.add_argument(
        "--from-shipped",
        action="store_true",
        help="start from the shipped generator (as the finished generator_finetune stage) instead of retraining "
        "the first two stages; generator_refine then trains at 77 tokens, generator_context at 12",
    )
    train.set_defaults(func=_train)

    evaluate = actions.add_parser(
        "evaluate", help="measure prompt following, DiffExp's premises and the rewards (model-card figures)"
    )
    evaluate.add_argument("--pipeline", default=None, help="generator folder (default: the shipped one)")
    evaluate.add_argument("--per-prompt", type=int, default=4)
    evaluate.add_argument("--steps", type=int, default=20, help="DDIM steps of every sample (the model card's: 20)")
    evaluate.add_argument(
        "--only",
        nargs="*",
        choices=MEASUREMENTS,
        help="just these measurements (default: all of them)",
    )
    evaluate.add_argument("--out", type=Path, help="write the figures as JSON here")
    evaluate.set_defaults(func=_evaluate)

    ship = actions.add_parser("ship", help="copy trained models from a work dir into the package (fp16 safetensors)")
    ship.add_argument("--work-dir", default=TrainSettings.work_dir)
    ship.set_defaults(func=_ship)


def _train(args) -> int:
    from diffexp.embedded.training import train

    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in fields(TrainSettings)})
    if args.from_shipped:
        from diffexp.embedded.training import seed_from_shipped

        seed_from_shipped(settings, WEIGHTS_DIR / "pipeline")
    train(settings, only=args.stages)
    return 0


def _evaluate(args) -> int:
    from diffexp.embedded import measurements
    from diffexp.embedded.pipeline import load_world_pipeline
    from diffexp.embedded.rewards import WorldAestheticReward, WorldAlignmentReward

    for name in ("per_prompt", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    wanted = args.only or MEASUREMENTS
    pipe = load_world_pipeline(path=args.pipeline)
    n, steps = args.per_prompt, args.steps
    run = {
        "prompt_following": lambda: measurements.prompt_following(pipe, per_prompt=n, steps=steps),
        "cfg_premise": lambda: measurements.cfg_premise(pipe, per_prompt=n, steps=steps),
        # presence changes by a few points under phrase weights: 4x the samples (2 noise seeds), paired
        "phrase_premise": lambda: measurements.phrase_premise(pipe, per_prompt=2 * n, steps=steps),
        "alignment_reward": lambda: measurements.alignment_vs_ground_truth(
            pipe, WorldAlignmentReward(), per_prompt=n, steps=steps
        ),
        "aesthetic_reward": lambda: measurements.aesthetic_fit(WorldAestheticReward()),
    }
    figures: dict = {}
    for name in wanted:
        figures[name] = run[name]()
        print(json.dumps({name: figures[name]}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


def _ship(args) -> int:
    """Copy the finished stages' models into diffexp/embedded/weights (the generator is fp16
    already): the generator of the last finished generator stage, and each reward model whose
    stage finished in this work dir (the shipped one stays otherwise)."""
    import torch
    from transformers import CLIPModel, CLIPVisionModelWithProjection

    from diffexp.embedded.stage_tools import GENERATOR_STAGES
    from diffexp.embedded.training import stages

    work = Path(args.work_dir)
    done = [s for s in stages() if s != "latents" and (work / s / "DONE").exists()]
    generator = next((s for s in reversed(GENERATOR_STAGES) if s in done and (work / s / "pipeline").exists()), None)
    if generator is None and not {"reward_clip", "reward_clip_robust", "aesthetic"} & set(done):
        raise FileNotFoundError(f"no finished generator or reward stage in {work}; run `diffexp embedded train` first")
    WEIGHTS_DIR.mkdir(exist_ok=True)
    if generator:
        target = WEIGHTS_DIR / "pipeline"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / generator / "pipeline", target)
        print(f"generator: {generator}")
    alignment = next((s for s in ("reward_clip_robust", "reward_clip") if s in done), None)
    if alignment:  # the alignment reward is the robust CLIP where that stage finished
        CLIPModel.from_pretrained(work / alignment / "model").to(torch.float16).save_pretrained(
            WEIGHTS_DIR / "reward_clip"
        )
        print(f"alignment reward: {alignment}")
    if "aesthetic" in done:
        tower = CLIPVisionModelWithProjection.from_pretrained(work / "aesthetic" / "model")
        tower.to(torch.float16).save_pretrained(WEIGHTS_DIR / "aesthetic")
        shutil.copy(work / "aesthetic" / "model" / "head.safetensors", WEIGHTS_DIR / "aesthetic" / "head.safetensors")
    for stage in done:
        record = json.loads((work / stage / "DONE").read_text())
        if "seeded_from" not in record:  # a seeded stage keeps the record of the run that trained it
            shutil.copy(work / stage / "DONE", WEIGHTS_DIR / f"{stage}_training.json")
    size = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    print(f"shipped to {WEIGHTS_DIR} ({size / 2**20:.1f} MiB)")
    return 0
