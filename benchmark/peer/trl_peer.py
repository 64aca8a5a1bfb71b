"""The peer side of `benchmark/peer_comparison.py`: TRL 0.23.1's DDPOTrainer / AlignPropTrainer.

Runs inside the peer environment (`.venv-trl`, made by `benchmark/peer/env.py`), never imports
diffexp, and prints one JSON object on its last line:

    .venv-trl/bin/python benchmark/peer/trl_peer.py '{"algorithm": "ddpo", "pipeline": "...", ...}'

The settings (JSON) are the ones `benchmark/peer/workload.py` defines for both implementations.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from instruments import PeakRSS, UNetClock  # noqa: E402  (a sibling file, shared with the diffexp side)


def brightness(images, prompts, metadata):
    """Mean pixel value in [0, 1], per image (differentiable): the workload's reward on both sides."""
    return images.float().mean(dim=(1, 2, 3)), {}


def prompt_function(prompts: list[str]):
    state = {"i": 0}

    def next_prompt():
        prompt = prompts[state["i"] % len(prompts)]
        state["i"] += 1
        return prompt, {}

    return next_prompt


def ddpo(s: dict, logdir: str) -> dict:
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    config = DDPOConfig(
        num_epochs=s["epochs"],
        save_freq=10**6,
        mixed_precision="no",
        logdir=logdir,
        seed=s["seed"],
        sample_num_steps=s["steps"],
        sample_eta=s["eta"],
        sample_guidance_scale=s["guidance"],
        sample_batch_size=s["sample_batch"],
        sample_num_batches_per_epoch=s["sample_batches"],
        train_batch_size=s["train_batch"],
        train_gradient_accumulation_steps=s["grad_accum"],
        train_num_inner_epochs=1,
        train_timestep_fraction=s["timestep_fraction"],
        train_learning_rate=s["lr"],
        train_use_8bit_adam=False,
        train_cfg=True,
        per_prompt_stat_tracking=False,
        async_reward_computation=False,
    )
    pipeline = DefaultDDPOStableDiffusionPipeline(s["pipeline"], use_lora=True)  # LoRA r=4 on to_q/k/v/out
    trainer = DDPOTrainer(config, brightness, prompt_function(s["prompts"]), pipeline)
    clock, times, shares, global_step = UNetClock(), [], [], 0
    for epoch in range(s["epochs"]):
        clock.reset()
        start = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        times.append(time.perf_counter() - start)
        shares.append(clock.total_s / times[-1])
    return {"epoch_s": times, "unet_share": shares}


def alignprop(s: dict, logdir: str) -> dict:
    from trl import AlignPropConfig, AlignPropTrainer, DefaultDDPOStableDiffusionPipeline

    config = AlignPropConfig(
        num_epochs=s["epochs"],
        save_freq=10**6,
        mixed_precision="no",
        logdir=logdir,
        seed=s["seed"],
        sample_num_steps=s["steps"],
        sample_eta=s["eta"],
        sample_guidance_scale=s["guidance"],
        train_batch_size=s["batch"],
        train_gradient_accumulation_steps=1,
        train_learning_rate=s["lr"],
        train_use_8bit_adam=False,
        truncated_backprop_rand=False,
        truncated_backprop_timestep=s["steps"] - s["k"],  # gradients through the last k steps
        log_image_freq=10**6,
    )
    pipeline = DefaultDDPOStableDiffusionPipeline(s["pipeline"], use_lora=True)
    trainer = AlignPropTrainer(config, brightness, prompt_function(s["prompts"]), pipeline)
    clock, times, peaks, shares, global_step = UNetClock(), [], [], [], 0
    for epoch in range(s["epochs"]):
        clock.reset()
        with PeakRSS() as peak:
            start = time.perf_counter()
            global_step = trainer.step(epoch, global_step)
            times.append(time.perf_counter() - start)
        peaks.append(peak.increase_bytes)
        shares.append(clock.total_s / times[-1])
    return {"step_s": times, "peak_rss_increase_bytes": peaks, "unet_share": shares}


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings.get("threads", torch.get_num_threads()))
    warnings.filterwarnings("ignore")
    import trl
    from accelerate import PartialState

    PartialState()  # TRL's pipeline logs through accelerate before its trainer would create the state
    with tempfile.TemporaryDirectory() as logdir:
        result = {"ddpo": ddpo, "alignprop": alignprop}[settings["algorithm"]](settings, logdir)
    result.update(implementation=f"trl {trl.__version__}", torch=torch.__version__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
