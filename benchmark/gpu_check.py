"""CUDA checks and GPU timings, as one short script for a lent GPU machine.

    python benchmark/gpu_check.py --out gpu_check.json

Sections (each runs even if another fails; results and errors go to the JSON file):
1. correctness on the tiny SD 1.5 twin in fp32 on CUDA: the sampler's final image equals the
   diffusers pipeline's; replayed log-probs equal the sampled ones under all four strategies;
   a 2-epoch DDPO run and a 1-epoch AlignProp run through Lightning on the GPU (first inner
   PPO ratio, finite rewards);
2. timing on the SD 1.5-sized twin (random weights, real sizes) in fp16 at 512x512: trajectory
   sampling with log-probs vs a plain pipeline call, same images (median of repeats);
3. AlignProp peak memory on the SD 1.5-sized twin with UNet gradient checkpointing on and off.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import traceback

import torch

from diffexp.exploration import build_strategy
from diffexp.models import get_pipeline
from diffexp.sampling.trajectory import TrajectorySampler

STRATEGIES = ["baseline", "cfg", "phrase", "diffexp"]


def _sync_time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def correctness() -> dict:
    out = {}
    pipe = get_pipeline("tiny-sd15", device="cuda")
    prompts = ["a cat and a dog", "a red circle above a blue square"]
    reference = pipe(
        prompts,
        num_inference_steps=6,
        guidance_scale=7.5,
        eta=1.0,
        generator=torch.Generator("cuda").manual_seed(3),
        output_type="pt",
    ).images
    sampler = TrajectorySampler(pipe, num_steps=6, eta=1.0)
    plan = build_strategy({"strategy": "baseline", "guidance_scale": 7.5}).plan(prompts, 6)
    with torch.no_grad():
        traj = sampler.sample(plan, torch.Generator("cuda").manual_seed(3))
    out["pipeline_max_abs_diff"] = (traj.images - reference).abs().max().item()
    worst = {}
    for strategy in STRATEGIES:
        g = torch.Generator().manual_seed(0)
        plan = build_strategy(strategy).plan(["a monkey washing the dishes", "a cat, watercolor"] * 2, 6, g)
        with torch.no_grad():
            traj = sampler.sample(plan, torch.Generator("cuda").manual_seed(0))
            worst[strategy] = max(
                (torch.exp(sampler.step_log_prob(traj, s) - traj.log_probs[:, s]) - 1).abs().max().item()
                for s in range(6)
            )
    out["replay_max_abs_ratio_dev"] = worst
    import pandas as pd

    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.runner import run

    base = {
        "model.pretrained": "tiny-sd15",
        "sample.num_steps": 4,
        "sample.batch_size": 4,
        "sample.num_batches_per_epoch": 1,
        "prompts.set": "list",
        "prompts.prompts": ["a cat", "a (red)1.2 dog"],
        "prompts.eval_options": {},
        "reward.name": "brightness",
        "run.eval_every": 100,
        "run.loggers": ["csv"],
        "run.accelerator": "gpu",
        "exploration.strategy": "diffexp",
    }
    with tempfile.TemporaryDirectory() as tmp:
        ddpo = {
            **base,
            "train.batch_size": 2,
            "train.gradient_accumulation_steps": 1,
            "train.stat_tracking.min_count": 2,
            "run.num_epochs": 2,
            "run.output_dir": tmp,
        }
        # TF32 (cuDNN's default on Ampere+) rounds the replayed minibatch differently: once with, once without
        run(load_config(None, {**ddpo, "run.name": "d", "run.allow_tf32": True}))
        df = pd.read_csv(f"{tmp}/d/csv/metrics.csv")
        out["ddpo_first_step_ratio_max_dev"] = df["first_step_ratio_max_dev"].tolist()
        out["ddpo_reward_mean"] = df["reward_mean"].tolist()
        run(load_config(None, {**ddpo, "run.name": "d32", "run.allow_tf32": False}))
        out["ddpo_first_step_ratio_max_dev_no_tf32"] = pd.read_csv(f"{tmp}/d32/csv/metrics.csv")[
            "first_step_ratio_max_dev"
        ].tolist()
        run(
            load_config(
                None,
                {
                    **base,
                    "algorithm": "alignprop",
                    "train.truncation.k": 2,
                    "run.num_epochs": 1,
                    "run.output_dir": tmp,
                    "run.name": "a",
                },
            )
        )
        df = pd.read_csv(f"{tmp}/a/csv/metrics.csv")
        out["alignprop_reward_mean"] = df["reward_mean"].tolist()
    return out


def timing(batch: int, steps: int, repeats: int, profile: bool = False) -> dict:
    pipe = get_pipeline("sd15-sized", dtype="fp16", device="cuda")
    prompts = ["a photograph of an astronaut riding a horse"] * batch

    def plain():
        with torch.no_grad():
            return pipe(
                prompts,
                num_inference_steps=steps,
                guidance_scale=7.5,
                eta=1.0,
                generator=torch.Generator("cuda").manual_seed(0),
                output_type="pt",
            ).images

    sampler = TrajectorySampler(pipe, num_steps=steps, eta=1.0)
    plan = build_strategy({"strategy": "baseline", "guidance_scale": 7.5}).plan(prompts, steps)

    def ours():
        with torch.no_grad():
            return sampler.sample(plan, torch.Generator("cuda").manual_seed(0)).images

    same = (plain() - ours()).abs().max().item()  # also the warm-up
    t_plain, t_ours = [], []
    for _ in range(repeats):  # interleaved, so drifts of the host's speed hit both alike
        t_plain += _sync_time(plain, 1)
        t_ours += _sync_time(ours, 1)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        for name, fn in (("plain", plain), ("ours", ours)):
            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            print(f"--- profile: {name}")
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=40))
            events = {e.key: e.count for e in prof.key_averages()}
            print(
                {
                    k: v
                    for k, v in events.items()
                    if "Memcpy" in k or "Synchronize" in k or "float64" in k.lower() or "copy_" in k
                }
            )
    return {
        "batch": batch,
        "steps": steps,
        "max_abs_diff_images": same,
        "plain_pipeline_s": statistics.median(t_plain),
        "trajectory_sampler_s": statistics.median(t_ours),
        "ratio": statistics.median(t_ours) / statistics.median(t_plain),
    }


def alignprop_memory(batch: int, steps: int, k: int) -> dict:
    from diffexp.models.lora import add_lora

    pipe = get_pipeline("sd15-sized", dtype="fp16", device="cuda")
    params = add_lora(pipe.unet)
    for p in params:
        p.data = p.data.float()  # LoRA weights in fp32, as a mixed-precision run keeps them
    texts = ["a photograph of an astronaut riding a horse"] * batch
    plan = build_strategy({"strategy": "baseline", "guidance_scale": 7.5}).plan(texts, steps)
    mask = torch.arange(steps) >= steps - k
    out = {"batch": batch, "steps": steps, "k": k}
    for ckpt in (True, False):
        sampler = TrajectorySampler(pipe, num_steps=steps, eta=1.0, gradient_checkpointing=ckpt)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            traj = sampler.sample(plan, torch.Generator("cuda").manual_seed(0), grad_steps=mask)
            traj.images.float().sum().backward()  # a sum: a mean's tiny per-pixel gradients underflow in fp16
        torch.cuda.synchronize()
        out[f"ckpt_{'on' if ckpt else 'off'}_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out[f"ckpt_{'on' if ckpt else 'off'}_step_s"] = time.perf_counter() - start
        out[f"ckpt_{'on' if ckpt else 'off'}_lora_grad_norm"] = (
            sum(p.grad.float().norm() ** 2 for p in params).sqrt().item()
        )
        for p in params:
            p.grad = None
        del traj
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sections", default="correctness,timing,timing_batch16,alignprop_memory_k1,alignprop_memory_k5"
    )
    parser.add_argument("--profile", action="store_true", help="print torch profiler tables of both sampling calls")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    sections = {
        "correctness": correctness,
        "timing": lambda: timing(args.batch, args.steps, args.repeats, args.profile),
        "timing_batch16": lambda: timing(16, args.steps, args.repeats, args.profile),
        "alignprop_memory_k1": lambda: alignprop_memory(2, args.steps, 1),
        "alignprop_memory_k5": lambda: alignprop_memory(2, args.steps, 5),
    }
    for name, fn in sections.items():
        if name not in args.sections.split(","):
            continue
        start = time.perf_counter()
        try:
            results[name] = fn()
        except Exception:  # keep going: one broken section must not hide the others
            results[name] = {"error": traceback.format_exc()}
        results[name + "_wall_s"] = time.perf_counter() - start
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
