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
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from diffexp.algorithms import resume_state, sharding
from diffexp.algorithms.heldout import HeldOutEvaluation
from diffexp.algorithms.random_streams import RandomStreams
from diffexp.algorithms.stopping import NonFiniteError, raise_if_stop_requested
from diffexp.evaluation import (
    build_evaluator,
    evaluators_for_prompt_set,
    within_prompt_diversity,
)
from diffexp.exploration import build_strategy
from diffexp.models import get_pipeline
from diffexp.models.lora import add_lora
from diffexp.models.pipelines import denoiser_of
from diffexp.prompts.base import PromptLike, as_prompt
from diffexp.sampling.flow_trajectory import make_sampler
from diffexp.sampling.trajectory import TrajectorySampler


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
    """The reward a ``reward`` section names: one registered reward or a weighted sum of its parts."""
    from diffexp.rewards import build_reward, build_weighted_sum

    if config.single:
        return build_reward(config.single, **config.options)
    return build_weighted_sum(config.weights)


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
        own = config.reward.single
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
        own = config.reward.single
        self.eval_rewards = {name: build_reward_by_name(name) for name in config.run.eval_rewards if name != own}
        names = dict.fromkeys([*evaluators_for_prompt_set(config.prompts.set), *config.run.evaluators])
        self.evaluators = [build_evaluator(name) for name in names]  # (images, prompts) -> extra eval metrics
        self.train_prompts = resolve_prompts(config.prompts)
        self.eval_prompts = evenly_spaced(resolve_prompts(config.prompts, evaluation=True), config.run.eval_num_prompts)
        self.streams = RandomStreams()  # prompts, noise, exploration: common random numbers across arms
        self.eval_samples = 0  # held-out samples drawn so far (scored, but not reward queries)
        self.heldout = HeldOutEvaluation(self)

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
                f"epoch {self.current_epoch}, {step}: reward {self.config.reward.describe()!r} returned {bad} "
                "non-finite values"
            )
        self.reward_queries += len(prompts) * self.world_size
        return rewards

    def check_finite(self, loss: torch.Tensor, step: str) -> None:
        """Every loss is checked (and a requested stop honoured) before its backward pass."""
        raise_if_stop_requested(f"epoch {self.current_epoch}, {step}")
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"epoch {self.current_epoch}, {step}: loss is {loss.item()} (reward {self.config.reward.describe()!r})"
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
                f"step (reward {self.config.reward.describe()!r}, learning rate "
                f"{self.config.train.learning_rate:g}); the checkpoint on disk is the last finite one"
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
        if self.global_rank == 0:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.reward_queries)
                logger.save()  # flush every epoch: a killed run keeps its curve up to the kill
        if progress:  # an epoch's metrics (not the base model's): in trainer.callback_metrics, for callbacks
            # Lightning keeps a key's last value: one this epoch did not measure (an evaluation metric
            # between evaluations) is logged as NaN, so no callback reads an old value as new
            self._callback_keys = getattr(self, "_callback_keys", set()) | set(metrics)
            unmeasured = dict.fromkeys(self._callback_keys - set(metrics), float("nan"))
            self.log_dict({**unmeasured, **metrics}, logger=False, on_step=False, on_epoch=True, rank_zero_only=True)
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

    # -- held-out evaluation (heldout.py) ----------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return self.heldout.evaluate()

    def evaluate_base_model(self) -> dict[str, float]:
        return self.heldout.evaluate_base_model()

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
        resume_state.save(self, checkpoint)

    def load_trainable(self, state_dict: dict) -> None:
        """Trainable weights as ``on_save_checkpoint`` stores them (LoRA keys, or ``unet.``-prefixed)."""
        resume_state.load_trainable(self, state_dict)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        resume_state.restore(self, checkpoint)

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
