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
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from diffexp.algorithms import sharding
from diffexp.algorithms.random_streams import RandomStreams
from diffexp.algorithms.stopping import raise_if_stop_requested
from diffexp.evaluation import (
    EVAL_IMAGE_DIR,
    build_evaluator,
    evaluators_for_prompt_set,
    grid_name,
    samples_name,
    within_prompt_diversity,
)
from diffexp.evaluation.artifacts import PROMPTS_NAME
from diffexp.exploration import build_strategy
from diffexp.models import get_pipeline
from diffexp.models.lora import add_lora, lora_state_dict
from diffexp.models.pipelines import denoiser_of
from diffexp.prompts.base import PromptLike, as_prompt
from diffexp.sampling.flow_trajectory import make_sampler
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


def evenly_spaced(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them if there are no more than ``n``): a
    structured prompt list (sorted by first object, say) is covered, not just its head."""
    if n >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def build_reward_by_name(name: str):
    from diffexp.rewards import build_reward

    return build_reward(name)


def resolve_reward(config):
    from diffexp.rewards import build_reward, build_weighted_sum

    if config.weights:
        return build_weighted_sum(config.weights)
    return build_reward(config.name, **config.options)


#: base-model evaluations of this process, by evaluation set (see ``evaluate_base_model``)
_BASE_EVALUATIONS: dict[str, tuple[dict, int, Path]] = {}
_BASE_EVALUATIONS_KEPT = 8


class NonFiniteError(RuntimeError):
    """A reward or loss became NaN/inf; the message names the epoch, the step and the reward."""


class RewardFinetuningModule(L.LightningModule):
    """The epoch template every algorithm shares; an algorithm fills in its steps.

    One epoch is ``rounds_per_epoch()`` rounds of :meth:`generate` -> :meth:`reward` ->
    :meth:`advantages` -> :meth:`update` (DDPO: one round over the epoch's samples; AlignProp: one
    per sampling batch, since its samples carry gradients), then the held-out evaluation on its
    cadence and logging against reward queries. ``generate`` returns samples with ``prompts`` (the
    original ones) and ``images``; ``update`` returns metrics, averaged over the rounds.
    """

    #: what every run logs (an algorithm adds its own in ``ALGORITHM_METRICS``)
    BASE_METRICS = (
        *("reward_mean", "reward_std", "reward_max", "reward_min", "diversity", "reward_prompt_mean_std"),
        *("num_unique_prompts", "time_sampling", "time_reward", "time_update", "reward_queries", "eval_samples"),
        *("epoch", "eval_reward_mean", "eval_reward_std", "eval_diversity"),
    )
    ALGORITHM_METRICS: tuple[str, ...] = ()

    @classmethod
    def metric_names(cls, config) -> set[str] | None:
        """Every metric a run of ``config`` logs, or None when an evaluator does not declare its own."""
        from diffexp.evaluation import evaluator_metrics

        names = {*cls.BASE_METRICS, *cls.ALGORITHM_METRICS}
        own = None if config.reward.weights else config.reward.name
        names |= {f"eval_score_{r}" for r in config.run.eval_rewards if r != own}
        for evaluator in dict.fromkeys([*evaluators_for_prompt_set(config.prompts.set), *config.run.evaluators]):
            declared = evaluator_metrics(evaluator)
            if declared is None:
                return None
            names |= set(declared)
        return names

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable weights
        self.reward_queries = 0
        self.pipe = get_pipeline(config.model.pretrained, dtype=config.model.dtype)
        for part in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            module = getattr(self.pipe, part, None)
            if module is not None:
                module.requires_grad_(False).eval()
        self.denoiser = denoiser_of(self.pipe)  # the UNet, or a flow model's transformer
        self.sharded = config.run.strategy == "fsdp" and config.run.devices > 1  # FSDP2: shards (sharding.py)
        if config.model.use_lora:
            self.trainable = add_lora(self.denoiser, config.model.lora)
        else:
            self.denoiser.requires_grad_(True)
            self.trainable = list(self.denoiser.parameters())
        for p in self.trainable:  # trainable weights stay fp32 whatever the frozen parts' dtype
            p.data = p.data.float()
        self.strategy = build_strategy(config.exploration)
        self.reward_fn = resolve_reward(config.reward)
        own = None if config.reward.weights else config.reward.name
        self.eval_rewards = {name: build_reward_by_name(name) for name in config.run.eval_rewards if name != own}
        names = dict.fromkeys([*evaluators_for_prompt_set(config.prompts.set), *config.run.evaluators])
        self.evaluators = [build_evaluator(name) for name in names]  # (images, prompts) -> extra eval metrics
        self.train_prompts = resolve_prompts(config.prompts)
        self.eval_prompts = evenly_spaced(resolve_prompts(config.prompts, evaluation=True), config.run.eval_num_prompts)
        self.streams = RandomStreams()  # prompts, noise, exploration: common random numbers across arms
        self.eval_samples = 0  # held-out samples drawn so far (scored, but not reward queries)

    # -- the epoch template: an algorithm implements generate and update ----------------------
    def rounds_per_epoch(self) -> int:
        return 1

    def round_context(self):
        """Context of each round (AlignProp: DDP's ``no_sync``, its backward runs within the round)."""
        return contextlib.nullcontext()

    def generate(self, round_index: int):
        raise NotImplementedError

    def reward(self, samples, round_index: int) -> torch.Tensor:
        """Scores on the original prompts, counted as reward queries."""
        return self.score(samples.images, samples.prompts, step=f"round {round_index}")

    def advantages(self, samples, rewards: torch.Tensor) -> torch.Tensor | None:
        return None

    def update(
        self, samples, rewards: torch.Tensor, advantages: torch.Tensor | None, round_index: int
    ) -> dict[str, float]:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        clock = PhaseClock()
        rewards_all, prompts_all, images_all, infos = [], [], [], {}
        for round_index in range(self.rounds_per_epoch()):
            with self.round_context():
                with clock("time_sampling"):
                    samples = self.generate(round_index)
                with clock("time_reward"):
                    rewards = self.reward(samples, round_index)
                    advantages = self.advantages(samples, rewards)
                with clock("time_update"):
                    for key, value in self.update(samples, rewards, advantages, round_index).items():
                        infos.setdefault(key, []).append(value)
            rewards_all.append(rewards.detach())
            prompts_all += list(samples.prompts)
            images_all.append(samples.images.detach())
        rewards = torch.cat(rewards_all)
        metrics = self.reward_metrics(self.gather(rewards.to(self.device)).cpu(), prompts_all, torch.cat(images_all))
        metrics.update({key: float(np.mean(values)) for key, values in infos.items()})
        metrics.update(clock.times)
        self.finish_epoch(metrics)

    # -- set-up ----------------------------------------------------------------------------
    @property
    def unet(self) -> torch.nn.Module:
        """The denoiser under its DDIM-model name (the embedded world's and older code's)."""
        return self.denoiser

    def make_sampler(self) -> TrajectorySampler:
        s = self.config.sample
        return make_sampler(
            self.pipe,
            num_steps=s.num_steps,
            eta=s.eta,
            height=s.resolution,
            width=s.resolution,
            gradient_checkpointing=self.gradient_checkpointing,
            on_step=lambda: raise_if_stop_requested(f"epoch {self.current_epoch}, a sampling step"),
        )

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the sampler checkpoints the UNet on steps that carry gradient (AlignProp's option)."""
        return True

    def on_fit_start(self) -> None:
        self.pipe.to(self.device)
        for reward in (self.reward_fn, *self.eval_rewards.values()):
            reward.to(self.device)
        self.sampler = self.make_sampler()
        if not getattr(self, "_restored_generator", False):
            self.streams.seed(self.config.run.seed, self.global_rank)

    def on_train_start(self) -> None:
        """A fresh run evaluates the base model first (the 0-query point of every held-out curve)."""
        if self.reward_queries:  # resumed: the base model was evaluated by the first attempt
            if self.global_rank == 0:
                for logger in self.loggers:
                    if hasattr(logger, "recover"):
                        logger.recover(getattr(self, "_held_back_metrics", []))
            return
        if self.global_rank == 0:
            for logger in self.loggers:  # a fresh start replaces the rows of an attempt that left no checkpoint
                if hasattr(logger, "truncate_after"):
                    logger.truncate_after(-1)
        if self.config.run.eval_at_start:
            self.log_metrics(self.evaluate_base_model(), epoch=-1, progress=False)

    def train_dataloader(self):
        return torch.utils.data.DataLoader([0], batch_size=1)

    # -- pieces every algorithm uses -------------------------------------------------------
    def draw_prompts(self, n: int) -> list[PromptLike]:
        """``n`` training prompts: n / samples_per_prompt random draws, each repeated in a row."""
        repeat = self.config.sample.samples_per_prompt
        idx = torch.randint(len(self.train_prompts), (n // repeat,), generator=self.streams.prompts)
        return [self.train_prompts[i] for i in idx.tolist() for _ in range(repeat)]

    def initial_noise(self, batch: int) -> torch.Tensor | None:
        """x_T for a sampling batch: None (the sampler draws one per sample) unless
        ``sample.share_group_noise``, when each group of ``samples_per_prompt`` shares one draw."""
        s = self.config.sample
        if not s.share_group_noise or s.samples_per_prompt == 1:
            return None
        dtype = self.pipe.dtype  # the frozen weights' (the trainable LoRA is fp32)
        groups = self.sampler.initial_latents(batch // s.samples_per_prompt, dtype, self.streams.noise, None)
        return groups.repeat_interleave(s.samples_per_prompt, dim=0)

    def score(self, images: torch.Tensor, prompts: list[str], step: str) -> torch.Tensor:
        """Reward on the original prompts; every scored image is one reward query (counted globally)."""
        rewards = self.reward_fn(images, prompts)
        if not torch.isfinite(rewards).all():
            bad = int((~torch.isfinite(rewards)).sum())
            raise NonFiniteError(
                f"epoch {self.current_epoch}, {step}: reward {self.config.reward.name!r} returned {bad} non-finite "
                "values"
            )
        self.reward_queries += len(prompts) * self.world_size
        return rewards

    def check_finite(self, loss: torch.Tensor, step: str) -> None:
        """Every loss is checked (and a requested stop honoured) before its backward pass."""
        raise_if_stop_requested(f"epoch {self.current_epoch}, {step}")
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"epoch {self.current_epoch}, {step}: loss is {loss.item()} (reward {self.config.reward.name!r})"
            )

    def check_finite_weights(self, step: str) -> None:
        """All trainable weights finite (one fused norm per step: cheap next to a UNet call)."""
        shards = [sharding.local(p.detach()) for p in self.trainable]
        finite = torch.isfinite(torch.stack(torch._foreach_norm(shards))).all().float()
        if self.sharded:  # every process checks its own shards: all must agree
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            bad = sum(int((~torch.isfinite(p)).sum()) for p in shards)
            raise NonFiniteError(
                f"epoch {self.current_epoch}, {step}: {bad} trainable weights are non-finite after the optimiser "
                f"step (reward {self.config.reward.name!r}, learning rate {self.config.train.learning_rate:g}); the "
                "checkpoint on disk is the last finite one"
            )

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-rank tensor across ranks (identity on one process)."""
        if self.world_size == 1:
            return tensor
        return self.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    def sync_gradients(self) -> None:
        """Average gradients across ranks (backward ran under ``no_sync``; FSDP reduced them already)."""
        if self.world_size == 1 or self.sharded:
            return
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world_size

    def no_sync(self):
        model = self.trainer.strategy.model
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def clip_gradients(self, max_norm: float) -> float:
        """Clip the trainable weights' gradient norm (over all shards); returns the norm before clipping."""
        return float(sharding.full(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)))

    def configure_model(self) -> None:
        """Lightning's hook for sharding (``run.strategy: fsdp``); a no-op otherwise."""
        if self.sharded and not getattr(self, "_sharded_done", False):
            sharding.shard_pipeline(self.pipe, self.denoiser, self.device_mesh["data_parallel"])
            # FSDP2 replaces each parameter by a sharded one: the optimiser must see the new objects
            self.trainable = [p for p in self.denoiser.parameters() if p.requires_grad]
            self._sharded_done = True

    def log_metrics(self, metrics: dict[str, Any], epoch: int | None = None, progress: bool = True) -> None:
        """Log against ``reward_queries`` (the x-axis of every sample-efficiency curve); ``epoch``
        defaults to the current one (-1 marks the evaluation before training)."""
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["reward_queries"] = float(self.reward_queries)
        metrics["eval_samples"] = float(self.eval_samples)
        metrics["epoch"] = float(self.current_epoch if epoch is None else epoch)
        self.last_metrics = metrics  # for callbacks (e.g. the sweep harness's pruning)
        if self.global_rank == 0:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.reward_queries)
                logger.save()  # flush every epoch: a killed run keeps its curve up to the kill
        if progress:
            self.log("reward", metrics.get("reward_mean", 0.0), prog_bar=True, logger=False, rank_zero_only=True)
            self.log("queries", float(self.reward_queries), prog_bar=True, logger=False, rank_zero_only=True)

    def finish_epoch(self, metrics: dict[str, Any]) -> None:
        """The end of every algorithm's epoch: held-out evaluation on its cadence, then logging."""
        epoch = self.current_epoch + 1
        if epoch % self.config.run.eval_every == 0 or epoch == self.config.run.num_epochs:
            metrics.update(self.evaluate())
        self.log_metrics(metrics)

    def reward_metrics(self, rewards: torch.Tensor, prompts: list[str], images: torch.Tensor) -> dict[str, float]:
        """Reward statistics over ``rewards`` (the global batch); per-prompt and diversity over this rank's samples."""
        local = (
            rewards[self.global_rank * len(prompts) : (self.global_rank + 1) * len(prompts)]
            if len(rewards) > len(prompts)
            else rewards
        )
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
        """The held-out set: the same prompts and noise at every evaluation of every run of a study
        (``run.eval_seed``), sampled without exploration at the base CFG scale, scored by the reward,
        the extra ``run.eval_rewards`` and the evaluators. Not counted as reward queries."""
        run = self.config.run
        prompts = [p for p in self.eval_prompts for _ in range(run.eval_samples_per_prompt)]
        traj = self.sample_without_exploration(prompts, torch.Generator().manual_seed(run.eval_seed))
        self.eval_samples += len(traj)
        rewards = self.reward_fn(traj.images, traj.prompts)
        if not torch.isfinite(rewards).all():
            raise NonFiniteError(
                f"epoch {self.current_epoch}, evaluation: reward {self.config.reward.name!r} returned "
                f"{int((~torch.isfinite(rewards)).sum())} non-finite values on the evaluation set"
            )
        metrics = {
            "eval_reward_mean": rewards.mean().item(),
            "eval_reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "eval_diversity": within_prompt_diversity(traj.images, traj.prompts),
        }
        for name, reward in self.eval_rewards.items():
            metrics[f"eval_score_{name}"] = reward(traj.images, traj.prompts).mean().item()
        for evaluator in self.evaluators:
            metrics.update(evaluator(traj.images, traj.prompts))
        self.save_eval_images(traj.images, traj.prompts, rewards)
        return metrics

    def evaluate_base_model(self) -> dict[str, float]:
        """:meth:`evaluate` before any update. The untrained module is the base model (a LoRA adapter
        starts with B = 0, so it adds exactly zero), so every run of a study with the same evaluation
        set gets the same numbers and images: a process that runs several trials (a sweep worker)
        evaluates the base model once per evaluation set and reuses it."""
        key = self._base_evaluation_key()
        cached = _BASE_EVALUATIONS.get(key)
        if cached is None:
            metrics = self.evaluate()
            folder = Path(self.run_dir) / EVAL_IMAGE_DIR
            _BASE_EVALUATIONS[key] = (dict(metrics), self.eval_samples, folder)
            while len(_BASE_EVALUATIONS) > _BASE_EVALUATIONS_KEPT:
                _BASE_EVALUATIONS.pop(next(iter(_BASE_EVALUATIONS)))
            return metrics
        metrics, samples, folder = cached
        names = [grid_name(0), samples_name(0), PROMPTS_NAME]
        if not all((folder / n).is_file() for n in names):  # the first run's files are gone: evaluate again
            _BASE_EVALUATIONS.pop(key)
            return self.evaluate_base_model()
        self.eval_samples += samples
        self.copy_eval_files(folder, names)
        return dict(metrics)

    def _base_evaluation_key(self) -> str:
        c = self.config
        fields = {
            "model": c.model.model_dump(mode="json"),
            "steps": c.sample.num_steps,
            "eta": c.sample.eta,
            "resolution": c.sample.resolution,
            "guidance": c.exploration.guidance_scale,
            "prompts": [str(p) for p in self.eval_prompts],
            "eval": {
                k: getattr(c.run, k)
                for k in ("eval_samples_per_prompt", "eval_seed", "eval_rewards", "evaluators", "precision")
            },
            "reward": c.reward.model_dump(mode="json"),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }
        fields["model"].pop("lora", None)  # the adapter's shape does not change the base model
        return json.dumps(fields, sort_keys=True, default=str)

    def sample_without_exploration(self, prompts: list, generator: torch.Generator) -> Trajectory:
        """Samples at the base CFG scale with ``generator``, UNet in eval mode (evaluation, never training)."""
        plan = build_strategy({"strategy": "baseline", "guidance_scale": self.config.exploration.guidance_scale}).plan(
            prompts, self.config.sample.num_steps, generator
        )
        was_training = self.denoiser.training
        self.denoiser.eval()
        sampler = getattr(self, "sampler", None) or self.make_sampler()
        traj = sampler.sample(plan, generator)
        self.denoiser.train(was_training)
        return traj

    def save_eval_images(self, images: torch.Tensor, prompts: list[str], rewards: torch.Tensor) -> None:
        if self.global_rank != 0:
            return
        from diffexp.visualize import captioned_grid, image_strip

        captions = [f"{p} | r={r:.2f}" for p, r in zip(prompts, rewards.tolist())]
        folder = Path(self.run_dir) / EVAL_IMAGE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        grid = folder / grid_name(self.reward_queries)
        captioned_grid(images, captions, ncols=max(2, self.config.run.eval_samples_per_prompt * 2), cell=96).save(grid)
        samples = folder / samples_name(self.reward_queries)
        image_strip(images).save(samples)
        (folder / PROMPTS_NAME).write_text(json.dumps(list(prompts)))
        self.log_eval_artifacts([grid, samples, folder / PROMPTS_NAME])

    def copy_eval_files(self, source: Path, names: list[str]) -> None:
        """Another run's evaluation files (the shared base-model evaluation) into this run's folder."""
        if self.global_rank != 0:
            return
        folder = Path(self.run_dir) / EVAL_IMAGE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        copied = []
        for name in names:
            if source.resolve() != folder.resolve():
                shutil.copyfile(source / name, folder / name)
            copied.append(folder / name)
        self.log_eval_artifacts(copied)

    def log_eval_artifacts(self, paths: list[Path]) -> None:
        for logger in self.loggers:
            if hasattr(logger, "experiment") and hasattr(logger, "run_id") and logger.run_id:
                for path in paths:
                    logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=EVAL_IMAGE_DIR)

    @property
    def run_dir(self) -> str:
        return str(Path(self.config.run.output_dir) / self.config.run.name)

    # -- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.config.train
        optimizer = torch.optim.AdamW(
            self.trainable, lr=t.learning_rate, betas=t.adam_betas, weight_decay=t.weight_decay, eps=t.adam_epsilon
        )
        if not t.lr_warmup_steps:
            return optimizer
        warmup = t.lr_warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def step_optimizer(self, step: str = "optimiser step") -> None:
        """One step of the optimiser (gradients already synced and clipped), then of the warm-up, if
        any; the weights it leaves must be finite."""
        optimizer = self.optimizers()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if self.config.train.lr_warmup_steps:
            self.lr_schedulers().step()
        self.check_finite_weights(step)

    # -- checkpoint state: trainable weights, counters, stat tracker, every RNG ----------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.config.model.use_lora:
            trainable = lora_state_dict(self.denoiser)  # peft's key names; restored in on_load_checkpoint
        else:
            trainable = {f"unet.{k}": v for k, v in self.denoiser.state_dict().items()}
        trainable = {k: sharding.full(v) for k, v in trainable.items()}  # whole tensors (FSDP: a collective)
        if not all(bool(torch.isfinite(v).all()) for v in trainable.values()):  # never a NaN "last good" state
            raise NonFiniteError(f"epoch {self.current_epoch}: refusing to checkpoint non-finite trainable weights")
        checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in trainable.items()}
        held_back = [  # see RunMLFlowLogger.recover: a kill between this write and the commit loses nothing
            {"metrics": dict(m), "step": int(step)}
            for logger in self.loggers
            for m, step in getattr(logger, "pending", [])
        ]
        checkpoint["diffexp"] = {
            "config": json.dumps(self.config.model_dump(mode="json")),
            "held_back_metrics": held_back,
            "reward_queries": self.reward_queries,
            "random_streams": self.streams.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state(),
            "python_rng": _python_state(),
            "extra": self.extra_state(),
        }
        if self.world_size > 1:  # each process's own random streams (a resume must continue every one)
            own = {k: checkpoint["diffexp"][k] for k in ("random_streams", "torch_rng", "extra")}
            every = [None] * self.world_size
            dist.all_gather_object(every, own)
            checkpoint["diffexp"]["per_rank"] = every

    def load_trainable(self, state_dict: dict) -> None:
        """Trainable weights as ``on_save_checkpoint`` stores them (LoRA keys, or ``unet.``-prefixed)."""
        if self.config.model.use_lora and self.sharded:  # into the shards, by the adapter's parameter names
            params = {n.replace(".default.", "."): p for n, p in self.denoiser.named_parameters() if "lora_" in n}
            sharding.load_full_into(params, state_dict)
        elif self.config.model.use_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.denoiser, state_dict, adapter_name="default")
        else:
            self.denoiser.load_state_dict({k.removeprefix("unet."): v for k, v in state_dict.items()})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["diffexp"]
        per_rank = state.get("per_rank") or []
        if len(per_rank) == self.world_size > 1:
            state = {**state, **per_rank[self.global_rank]}
        if self.config.model.use_lora:
            self.load_trainable(checkpoint["state_dict"])
            checkpoint["state_dict"] = {}
        self.reward_queries = int(state["reward_queries"])
        self._held_back_metrics = [(m["metrics"], m["step"]) for m in state.get("held_back_metrics", [])]
        if self._trainer is not None and self.global_rank == 0:
            for logger in self.loggers:  # epochs past the checkpoint are re-run: drop their rows
                if hasattr(logger, "truncate_after"):
                    logger.truncate_after(self.reward_queries)
        if "random_streams" not in state:
            raise ValueError(
                "the checkpoint was written before each run had separate prompt, noise and exploration "
                "streams (common random numbers across arms); start the run over with --restart"
            )
        self.streams.load_state_dict(state["random_streams"])
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


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }


def _numpy_unpack(state: dict):
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _python_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_unpack(state: dict):
    return (state["version"], tuple(state["internal"]), state["gauss"])
