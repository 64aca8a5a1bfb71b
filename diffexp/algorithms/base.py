"""What DDPO and AlignProp share: a Lightning module that owns the pipeline, the sampler, the
exploration strategy, the reward, the prompts, reward-query accounting, logging against
``reward_queries``, held-out evaluation and exact-resume checkpoint state.

One Lightning "epoch" is one algorithm epoch: the dataloader yields a single token per epoch and
``training_step`` runs generate -> reward -> (advantage) -> update with manual optimisation.
Under DDP, backward passes run inside ``no_sync`` and gradients are averaged explicitly before
each optimiser step, because one epoch makes many backward passes per forward of the wrapper.
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from diffexp.exploration import build_strategy
from diffexp.models import get_pipeline
from diffexp.models.lora import add_lora, lora_state_dict
from diffexp.prompts.base import PromptLike, as_prompt
from diffexp.sampling.trajectory import Trajectory, TrajectorySampler


def resolve_prompts(config, evaluation: bool = False) -> list[PromptLike]:
    if config.set == "list":
        if not config.prompts:
            raise ValueError("prompts.prompts: give at least one prompt when prompts.set is 'list'")
        return [as_prompt(p) for p in config.prompts]
    from diffexp.prompts.sets import get_prompts

    options = dict(config.options)
    if evaluation:
        options.update(config.eval_options)
    try:
        return list(get_prompts(config.set, **options))
    except TypeError as err:
        raise ValueError(f"prompts: set {config.set!r} does not take options {sorted(options)}: {err}") from None


def resolve_reward(config):
    from diffexp.rewards import WeightedSum, build_reward

    if config.weights:
        return WeightedSum({name: (build_reward(name), w) for name, w in config.weights.items()})
    return build_reward(config.name, **config.options)


class NonFiniteError(RuntimeError):
    """A reward or loss became NaN/inf; the message names the epoch, the step and the reward."""


class RewardFinetuningModule(L.LightningModule):
    """Base class; subclasses implement :meth:`training_step`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable weights
        self.reward_queries = 0
        self.pipe = get_pipeline(config.model.pretrained, dtype=config.model.dtype)
        for part in ("vae", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, part, None)
            if module is not None:
                module.requires_grad_(False).eval()
        self.unet = self.pipe.unet
        if config.model.use_lora:
            self.trainable = add_lora(self.unet, config.model.lora)
        else:
            self.unet.requires_grad_(True)
            self.trainable = list(self.unet.parameters())
        for p in self.trainable:  # trainable weights stay fp32 whatever the frozen parts' dtype
            p.data = p.data.float()
        self.strategy = build_strategy(config.exploration)
        self.reward_fn = resolve_reward(config.reward)
        self.train_prompts = resolve_prompts(config.prompts)
        self.eval_prompts = resolve_prompts(config.prompts, evaluation=True)[: config.run.eval_num_prompts]
        self.sample_generator = torch.Generator()
        self.evaluators: list = []  # callables (images, prompts) -> dict of extra eval metrics
        if config.prompts.set.startswith("embedded_"):  # the world's ground truth exposes reward hacking
            from diffexp.embedded.evaluation import ground_truth_metrics

            self.evaluators.append(ground_truth_metrics)

    # -- set-up ----------------------------------------------------------------------------
    def make_sampler(self) -> TrajectorySampler:
        s = self.config.sample
        return TrajectorySampler(self.pipe, num_steps=s.num_steps, eta=s.eta, gradient_checkpointing=getattr(self.config.train, "gradient_checkpointing", True))

    def on_fit_start(self) -> None:
        self.pipe.to(self.device)
        self.reward_fn.to(self.device) if hasattr(self.reward_fn, "to") else None
        self.sampler = self.make_sampler()
        if not getattr(self, "_restored_generator", False):
            self.sample_generator.manual_seed(self.config.run.seed * 1000 + self.global_rank)

    def train_dataloader(self):
        return torch.utils.data.DataLoader([0], batch_size=1)

    # -- pieces every algorithm uses -------------------------------------------------------
    def draw_prompts(self, n: int) -> list[PromptLike]:
        """``n`` training prompts: n / samples_per_prompt random draws, each repeated in a row."""
        repeat = self.config.sample.samples_per_prompt
        idx = torch.randint(len(self.train_prompts), (n // repeat,), generator=self.sample_generator)
        return [self.train_prompts[i] for i in idx.tolist() for _ in range(repeat)]

    def score(self, images: torch.Tensor, prompts: list[str], step: str) -> torch.Tensor:
        """Reward on the original prompts; every scored image is one reward query (counted globally)."""
        rewards = self.reward_fn(images, prompts)
        if not torch.isfinite(rewards).all():
            bad = int((~torch.isfinite(rewards)).sum())
            raise NonFiniteError(
                f"epoch {self.current_epoch}, {step}: reward {self.config.reward.name!r} returned {bad} non-finite values"
            )
        self.reward_queries += len(prompts) * self.world_size
        return rewards

    def check_finite(self, loss: torch.Tensor, step: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteError(f"epoch {self.current_epoch}, {step}: loss is {loss.item()} (reward {self.config.reward.name!r})")

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-rank tensor across ranks (identity on one process)."""
        if self.world_size == 1:
            return tensor
        return self.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    def sync_gradients(self) -> None:
        """Average gradients across ranks (backward ran under ``no_sync``)."""
        if self.world_size == 1:
            return
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world_size

    def no_sync(self):
        model = self.trainer.strategy.model
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Log against ``reward_queries`` (the x-axis of every sample-efficiency curve)."""
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["reward_queries"] = float(self.reward_queries)
        metrics["epoch"] = float(self.current_epoch)
        self.last_metrics = metrics  # for callbacks (e.g. the sweep harness's pruning)
        if self.global_rank == 0:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.reward_queries)
                logger.save()  # flush every epoch: a killed run keeps its curve up to the kill
        self.log("reward", metrics.get("reward_mean", 0.0), prog_bar=True, logger=False, rank_zero_only=True)
        self.log("queries", float(self.reward_queries), prog_bar=True, logger=False, rank_zero_only=True)

    def reward_metrics(self, rewards: torch.Tensor, prompts: list[str], images: torch.Tensor) -> dict[str, float]:
        """Reward statistics over ``rewards`` (the global batch); per-prompt and diversity over this rank's samples."""
        local = rewards[self.global_rank * len(prompts) : (self.global_rank + 1) * len(prompts)] if len(rewards) > len(prompts) else rewards
        out = {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "reward_max": rewards.max().item(),
            "reward_min": rewards.min().item(),
            "diversity": within_prompt_diversity(images, prompts),
        }
        per_prompt = {}
        for p, r in zip(prompts, local.tolist()):
            per_prompt.setdefault(p, []).append(r)
        means = [np.mean(v) for v in per_prompt.values()]
        out["reward_prompt_mean_std"] = float(np.std(means))
        out["num_unique_prompts"] = float(len(per_prompt))
        return out

    # -- held-out evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Fixed-seed samples of the held-out prompts, without exploration, scored by the reward."""
        run = self.config.run
        prompts = [p for p in self.eval_prompts for _ in range(run.eval_samples_per_prompt)]
        traj = self.sample_without_exploration(prompts, torch.Generator().manual_seed(run.seed + 12345))
        rewards = self.reward_fn(traj.images, traj.prompts)  # evaluation: not counted as training queries
        metrics = {"eval_reward_mean": rewards.mean().item(), "eval_diversity": within_prompt_diversity(traj.images, traj.prompts)}
        for evaluator in self.evaluators:
            metrics.update(evaluator(traj.images, traj.prompts))
        self.save_eval_images(traj, rewards)
        return metrics

    def sample_without_exploration(self, prompts: list, generator: torch.Generator) -> Trajectory:
        """Samples at the base CFG scale with ``generator``, UNet in eval mode (evaluation, never training)."""
        plan = build_strategy({"strategy": "baseline", "guidance_scale": self.config.exploration.guidance_scale}).plan(
            prompts, self.config.sample.num_steps, generator
        )
        was_training = self.unet.training
        self.unet.eval()
        sampler = getattr(self, "sampler", None) or self.make_sampler()
        traj = sampler.sample(plan, generator)
        self.unet.train(was_training)
        return traj

    def save_eval_images(self, traj: Trajectory, rewards: torch.Tensor) -> None:
        if self.global_rank != 0:
            return
        from diffexp.visualize import captioned_grid

        captions = [f"{p} | r={r:.2f}" for p, r in zip(traj.prompts, rewards.tolist())]
        grid = captioned_grid(traj.images, captions, ncols=max(2, self.config.run.eval_samples_per_prompt * 2), cell=96)
        out = Path(self.run_dir) / "eval_images" / f"queries_{self.reward_queries:08d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        grid.save(out)
        for logger in self.loggers:
            if hasattr(logger, "experiment") and hasattr(logger, "run_id") and logger.run_id:
                logger.experiment.log_artifact(logger.run_id, str(out), artifact_path="eval_images")

    @property
    def run_dir(self) -> str:
        return str(Path(self.config.run.output_dir) / self.config.run.name)

    # -- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.config.train
        return torch.optim.AdamW(self.trainable, lr=t.learning_rate, betas=t.adam_betas, weight_decay=t.weight_decay, eps=t.adam_epsilon)

    # -- checkpoint state: trainable weights, counters, stat tracker, every RNG ----------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.config.model.use_lora:
            trainable = lora_state_dict(self.unet)  # peft's key names; restored in on_load_checkpoint
        else:
            trainable = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in trainable.items()}
        checkpoint["diffexp"] = {
            "reward_queries": self.reward_queries,
            "sample_generator": self.sample_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state(),
            "python_rng": _python_state(),
            "extra": self.extra_state(),
        }

    def load_trainable(self, state_dict: dict) -> None:
        """Trainable weights as ``on_save_checkpoint`` stores them (LoRA keys, or ``unet.``-prefixed)."""
        if self.config.model.use_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.unet, state_dict, adapter_name="default")
        else:
            self.unet.load_state_dict({k.removeprefix("unet."): v for k, v in state_dict.items()})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["diffexp"]
        if self.config.model.use_lora:
            self.load_trainable(checkpoint["state_dict"])
            checkpoint["state_dict"] = {}
        self.reward_queries = int(state["reward_queries"])
        if self._trainer is not None and self.global_rank == 0:
            for logger in self.loggers:  # epochs past the checkpoint are re-run: drop their rows
                if hasattr(logger, "truncate_after"):
                    logger.truncate_after(self.reward_queries)
        self.sample_generator.set_state(state["sample_generator"])
        self._restored_generator = True
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(_numpy_unpack(state["numpy_rng"]))
        random.setstate(_python_unpack(state["python_rng"]))
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


class PhaseClock:
    """Wall time per named phase of an epoch (logged as ``time_<phase>`` seconds)."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def within_prompt_diversity(images: torch.Tensor, prompts: list[str]) -> float:
    """Mean pairwise L2 distance (per pixel, RMS) between images of the same prompt, averaged over prompts."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    flat = images.detach().float().flatten(1)
    values = []
    for idx in groups.values():
        if len(idx) > 1:
            x = flat[idx]
            d = torch.cdist(x, x) / x.shape[1] ** 0.5
            n = len(idx)
            values.append((d.sum() / (n * (n - 1))).item())
    return float(np.mean(values)) if values else float("nan")


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached}


def _numpy_unpack(state: dict):
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_unpack(state: dict):
    return (state["version"], tuple(state["internal"]), state["gauss"])
