"""The diffexp side of `benchmark/peer_comparison.py`: the same workloads as `trl_peer.py`, run
through diffexp's Lightning modules (or, for ``sampler``, the trajectory sampler against a plain
diffusers pipeline call). Prints one JSON object on its last line:

    python benchmark/peer/diffexp_peer.py '{"algorithm": "ddpo", "pipeline": "...", ...}'
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings

import lightning as L
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from instruments import PeakRSS, UNetClock  # noqa: E402 (a sibling file, importable once sys.path has its folder)


class EpochClock(L.Callback):
    """Wall time of each training epoch (sampling, reward, advantages and update: everything the
    module does in the epoch), the UNet's share of it, and (optionally) the epoch's peak memory."""

    def __init__(self, unet_clock: UNetClock | None = None, memory: bool = False):
        self.unet_clock, self.memory = unet_clock, memory
        self.epoch_s, self.unet_share, self.peak_rss_increase_bytes = [], [], []

    def on_train_epoch_start(self, trainer, module) -> None:
        if self.memory:
            self._peak = PeakRSS().__enter__()
        if self.unet_clock:
            self.unet_clock.reset()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        elapsed = time.perf_counter() - self._start
        self.epoch_s.append(elapsed)
        if self.unet_clock:
            self.unet_share.append(self.unet_clock.total_s / elapsed)
        if self.memory:
            self._peak.__exit__(None, None, None)
            self.peak_rss_increase_bytes.append(self._peak.increase_bytes)


def _common(s: dict, tmp: str) -> dict:
    return {
        "model.pretrained": s["pipeline"],
        "model.use_lora": True,
        "model.lora.rank": 4,
        "sample.num_steps": s["steps"],
        "sample.eta": s["eta"],
        "exploration.strategy": "baseline",
        "exploration.guidance_scale": s["guidance"],
        "prompts.set": "list",
        "prompts.prompts": s["prompts"],
        "prompts.eval_options": {},
        "reward.name": "brightness",
        "train.learning_rate": s["lr"],
        "run.num_epochs": s["epochs"],
        "run.eval_every": 10**6,
        "run.save_every": 10**6,
        "run.loggers": [],
        "run.output_dir": tmp,
        "run.name": s["algorithm"],
        "run.seed": s["seed"],
    }


def ddpo(s: dict, tmp: str) -> dict:
    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.runner import run

    config = load_config(
        None,
        {
            **_common(s, tmp),
            "algorithm": "ddpo",
            "sample.batch_size": s["sample_batch"],
            "sample.num_batches_per_epoch": s["sample_batches"],
            "train.batch_size": s["train_batch"],
            "train.gradient_accumulation_steps": s["grad_accum"],
            "train.num_inner_epochs": 1,
            "train.timestep_fraction": s["timestep_fraction"],
        },
    )
    clock = EpochClock(UNetClock())
    run(config, resume=False, extra_callbacks=[clock])
    return {"epoch_s": clock.epoch_s, "unet_share": clock.unet_share}


def alignprop(s: dict, tmp: str) -> dict:
    from diffexp.algorithms.config import load_config
    from diffexp.algorithms.runner import run

    config = load_config(
        None,
        {
            **_common(s, tmp),
            "algorithm": "alignprop",
            "sample.batch_size": s["batch"],
            "sample.num_batches_per_epoch": 1,  # one epoch = one optimiser step
            "train.gradient_accumulation_steps": 1,
            "train.truncation": {"mode": "fixed", "k": s["k"]},
            "train.gradient_checkpointing": True,
        },
    )
    clock = EpochClock(UNetClock(), memory=True)
    run(config, resume=False, extra_callbacks=[clock])
    return {
        "step_s": clock.epoch_s,
        "peak_rss_increase_bytes": clock.peak_rss_increase_bytes,
        "unet_share": clock.unet_share,
    }


def sampler(s: dict, tmp: str) -> dict:
    """Trajectory sampling with log-probs vs a plain pipeline call: same images, interleaved repeats."""
    from diffexp.exploration import build_strategy
    from diffexp.models import get_pipeline
    from diffexp.sampling.trajectory import TrajectorySampler

    pipe = get_pipeline(s["pipeline"])
    prompts = [s["prompts"][i % len(s["prompts"])] for i in range(s["sample_batch"])]
    ours = TrajectorySampler(pipe, num_steps=s["steps"], eta=s["eta"])
    plan = build_strategy({"strategy": "baseline", "guidance_scale": s["guidance"]}).plan(prompts, s["steps"])

    def plain_call():
        return pipe(
            prompts,
            num_inference_steps=s["steps"],
            guidance_scale=s["guidance"],
            eta=s["eta"],
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images

    def sampler_call():
        return ours.sample(plan, torch.Generator().manual_seed(0)).images

    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        difference = (plain_call() - sampler_call()).abs().max().item()  # also the warm-up
        t_plain, t_ours = [], []
        for _ in range(s["repeats"]):
            for fn, times in ((plain_call, t_plain), (sampler_call, t_ours)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    return {
        "plain_pipeline_s": t_plain,
        "trajectory_sampler_s": t_ours,
        "max_abs_image_difference": difference,
        "ratio_of_medians": statistics.median(t_ours) / statistics.median(t_plain),
    }


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings.get("threads", torch.get_num_threads()))
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        result = {"ddpo": ddpo, "alignprop": alignprop, "sampler": sampler}[settings["algorithm"]](settings, tmp)
    import diffexp

    result.update(implementation=f"diffexp {getattr(diffexp, '__version__', '')}".strip(), torch=torch.__version__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
