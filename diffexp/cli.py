"""The ``diffexp`` command line. Each sub-command lives in a small function; heavy imports are
deferred so ``diffexp --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="render a captioned image grid for prompts under an exploration strategy",
        description="Sample images with an exploration strategy and write a captioned grid (PNG). "
        "Each caption shows the prompt the model was conditioned on (with any phrase weights) and its CFG schedule.",
    )
    p.add_argument(
        "--pipeline",
        required=True,
        help="local diffusers folder, cached hub id, or registered name (tiny-sd15, tiny-sdxl, a plugin's: embedded)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        dest="prompts",
        help="a prompt (repeatable); compel weights like '(red circle)1.3' are allowed",
    )
    p.add_argument("--prompts-file", type=Path, help="text file with one prompt per line")
    p.add_argument("--strategy", default="baseline", help="exploration strategy: baseline, cfg, phrase, diffexp")
    p.add_argument(
        "--exploration-config",
        type=Path,
        help="YAML with an `exploration:` section (overrides --strategy/--guidance-scale)",
    )
    p.add_argument("--guidance-scale", type=float, default=5.0, help="base CFG scale")
    p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument(
        "--eta",
        type=float,
        default=1.0,
        help="noise in [0, 1]: DDIM's eta (1.0 as in DDPO), a flow model's SDE noise level",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG")
    p.set_defaults(func=_run_sample)


def _describe_scales(scales) -> str:
    first, last = float(scales[0]), float(scales[-1])
    if first == last and bool((scales == first).all()):
        return f"cfg {first:.2f}"
    changes = int((scales[1:] != scales[:-1]).sum())
    if changes == 1:
        low_steps = int((scales == first).sum())
        return f"cfg {first:.2f} for {low_steps}/{len(scales)} steps, then {last:.2f}"
    return f"cfg {first:.2f} -> {last:.2f}"


def render_grid(
    pipe, prompts: list[str], config, per_prompt: int, steps: int, eta: float, seed: int, out: Path
) -> None:
    """Sample ``per_prompt`` images per prompt under ``config`` and save a captioned grid."""
    import torch

    from diffexp.exploration import build_strategy
    from diffexp.sampling.flow_trajectory import make_sampler
    from diffexp.visualize import captioned_grid

    sampler = make_sampler(pipe, num_steps=steps, eta=eta)  # DDIM for UNets, the flow SDE for SD3 / FLUX
    generator = torch.Generator().manual_seed(seed)
    batch = [p for p in prompts for _ in range(per_prompt)]
    plan = build_strategy(config).plan(batch, steps, generator)
    with torch.no_grad():
        traj = sampler.sample(plan, generator)
    captions = [f"{c} | {_describe_scales(s)}" for c, s in zip(plan.conditioning_prompts, plan.guidance_scales)]
    out.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid(traj.images, captions, ncols=per_prompt).save(out)


def _run_sample(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from diffexp.algorithms.config import format_validation_error
    from diffexp.exploration import ExplorationConfig
    from diffexp.models import get_pipeline
    from diffexp.prompts.weighting import validate

    for name in ("per_prompt", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0.0 <= args.eta <= 1.0:
        raise ValueError(f"--eta must be between 0 and 1 (DDIM's eta, a flow model's noise level), got {args.eta}")
    _check_device(args.device)
    if args.out.is_dir() or not args.out.suffix:  # checked now: the file is written after sampling
        raise ValueError(f"--out {args.out} must be an image file name such as samples.png, not a folder")
    prompts = list(args.prompts or [])
    if args.prompts_file:
        if not args.prompts_file.is_file():
            raise ValueError(f"--prompts-file {args.prompts_file} is not a file; give a text file, one prompt a line")
        prompts += [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("give at least one --prompt or a --prompts-file")
    for prompt in prompts:
        validate(prompt)  # a syntax error before the model loads
    if args.exploration_config:
        if not args.exploration_config.is_file():
            raise ValueError(f"--exploration-config {args.exploration_config} is not a file")
        try:
            data = yaml.safe_load(args.exploration_config.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"--exploration-config {args.exploration_config} is not valid YAML: {err}") from None
        data = data.get("exploration", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ValueError(
                f"--exploration-config {args.exploration_config} must hold a mapping (an `exploration:` section or "
                f"its fields), got {type(data).__name__}"
            )
        try:
            config = ExplorationConfig(**data)
        except ValidationError as err:
            raise ValueError(format_validation_error(err, str(args.exploration_config))) from None
    else:
        config = ExplorationConfig(strategy=args.strategy, guidance_scale=args.guidance_scale)
    pipe = get_pipeline(args.pipeline, dtype=args.dtype, device=args.device)
    render_grid(pipe, prompts, config, args.per_prompt, args.steps, args.eta, args.seed, args.out)
    print(
        f"wrote {args.out} ({len(prompts) * args.per_prompt} samples, strategy {config.strategy}, pipeline "
        f"{args.pipeline})"
    )
    return 0


def _add_strategy_grids(sub: argparse._SubParsersAction) -> None:
    for name in ("strategy-grids", "demo"):  # "demo": the old name, kept for one release (it shadowed `make demo`)
        p = sub.add_parser(
            name,
            help="what each exploration strategy does to samples: one captioned grid per strategy"
            + (" (old name of strategy-grids)" if name == "demo" else ""),
        )
        p.add_argument("--pipeline", required=True, help="pipeline to sample from (see `diffexp sample --help`)")
        p.add_argument(
            "--prompt",
            action="append",
            dest="prompts",
            help="a prompt (repeatable; default: the prompts the pipeline's registration suggests, else three animals)",
        )
        p.add_argument("--out-dir", type=Path, default=Path("reports/strategy-grids"))
        p.add_argument("--steps", type=int, default=20, help="sampling steps")
        p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt")
        p.set_defaults(func=_run_strategy_grids, old_name=name == "demo")


def _check_device(device: str) -> None:
    """A device this machine has, said before any model loads."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device ({err})") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: this machine has no MPS device; use --device cpu")


#: strategy-grids' prompts for a pipeline whose registration suggests none (DDPO's animal x activity style)
FALLBACK_PROMPTS = ("a cat riding a bike", "a dog playing chess", "a horse washing the dishes")


def example_prompts(pipeline: str) -> list[str]:
    """The prompts a registered pipeline suggests (its ``example_prompts``), else FALLBACK_PROMPTS."""
    from diffexp.models import PIPELINES

    if pipeline in PIPELINES:
        return list(PIPELINES.entry(pipeline).extra.get("example_prompts", FALLBACK_PROMPTS))
    return list(FALLBACK_PROMPTS)


def _run_strategy_grids(args: argparse.Namespace) -> int:
    from diffexp.exploration import STRATEGIES, ExplorationConfig
    from diffexp.models import get_pipeline
    from diffexp.prompts.weighting import validate

    if getattr(args, "old_name", False):
        print(
            "note: `diffexp demo` is now `diffexp strategy-grids` (the old name goes in the next release; "
            "`make demo` runs the main job, `diffexp ablation`)",
            file=sys.stderr,
        )
    for name in ("per_prompt", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    prompts = args.prompts or example_prompts(args.pipeline)
    for prompt in prompts:
        validate(prompt)
    pipe = get_pipeline(args.pipeline)
    for name in ["baseline", "cfg", "phrase", "diffexp"]:
        assert name in STRATEGIES
        out = args.out_dir / f"samples_{name}.png"
        config = ExplorationConfig(strategy=name)
        render_grid(pipe, prompts, config, per_prompt=args.per_prompt, steps=args.steps, eta=1.0, seed=0, out=out)
        print(f"{name:>9}: {out}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune with DDPO or AlignProp under an exploration strategy",
        description="Run DDPO, GRPO or AlignProp from a YAML config (see experiments/) with optional overrides. "
        "Re-running a run (same run.output_dir/run.name) resumes from its last checkpoint, if its config is "
        "the same run's (a longer run.num_epochs, another eval cadence, loggers or threads may change); "
        "one training at a time holds a run directory. "
        "Use --print-config to see every field with its default and meaning.",
        epilog="example: diffexp train --config experiments/paper/ddpo_aesthetic.yaml exploration.strategy=diffexp "
        "run.seed=1",
    )
    p.add_argument("--config", type=Path, help="YAML run config")
    p.add_argument("--algorithm", help="a registered algorithm, e.g. ddpo or alignprop (overrides the config's)")
    p.add_argument(
        "--restart",
        "--no-resume",
        dest="restart",
        action="store_true",
        help="start the run over, discarding its checkpoint (its curve restarts too)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML (with field docs) and exit"
    )
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. train.learning_rate=1e-4 exploration.strategy=cfg"
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from diffexp.algorithms.config import config_class, describe_config, load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.algorithm:
        overrides["algorithm"] = args.algorithm
    if args.print_config and args.config is None and set(overrides) <= {"algorithm"}:
        print(describe_config(config_class(args.algorithm)))  # the defaults; a run must name what is <required>
        return 0
    config = load_config(args.config, overrides)
    if args.print_config:
        print(describe_config(config))
        return 0
    from diffexp.algorithms.runner import run
    from diffexp.algorithms.stopping import NonFiniteError, TrainingStopped

    try:
        run(config, resume=not args.restart)
    except TrainingStopped as stop:
        print(f"diffexp train: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except NonFiniteError as err:
        print(f"diffexp train: error: {err}", file=sys.stderr)
        return 1
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained run's adapter in the diffusers LoRA format (and optionally a merged pipeline)",
        description="Export RUN_DIR (run.output_dir/run.name) for plain diffusers: "
        "OUT/pytorch_lora_weights.safetensors loads with pipe.load_lora_weights(OUT) on the run's base model; "
        "--merge also writes OUT/pipeline, a full pipeline with the adapter merged in, for from_pretrained. "
        "The file is loaded back and checked before the command succeeds.",
    )
    p.add_argument("run_dir", type=Path, help="the run directory (holds config.yaml and checkpoints/last.ckpt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--merge", action="store_true", help="also write a merged pipeline (OUT/pipeline)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from diffexp.algorithms.export import export_run

    result = export_run(args.run_dir, args.out, merge=args.merge)
    print(f"exported {args.run_dir} ({result.reward_queries} reward queries) to {result.out}")
    if result.lora:
        print(f"  LoRA: {result.lora}  (pipe = <Pipeline>.from_pretrained({result.base_model!r}); ")
        print(f"        pipe.load_lora_weights({str(result.out)!r}))")
    if result.merged:
        print(f"  merged pipeline: {result.merged}  (<Pipeline>.from_pretrained({str(result.merged)!r}))")
    return 0


#: entry-point group of commands that plugins add (``diffexp embedded ...`` is one): each names a
#: function ``add(subparsers)``, loaded without importing the plugin's heavier modules
COMMAND_GROUP = "diffexp.commands"


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import entry_points

    from diffexp.harness.cli import add_sweep_command
    from diffexp.reporting.cli import add_report_command

    parser = argparse.ArgumentParser(
        prog="diffexp", description="Reward fine-tuning of diffusion models with exploration (DiffExp)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sample(sub)
    _add_strategy_grids(sub)
    _add_train(sub)
    _add_export(sub)
    add_sweep_command(sub)
    add_report_command(sub)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:  # bad input
        print(f"diffexp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a runtime fault (disk full, a store that went away): a sentence, status 1
        print(f"diffexp {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
