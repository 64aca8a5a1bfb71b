"""The held-out evaluation a training module owns: the same prompts and noise at every evaluation
of every run of a study, sampled without exploration, scored, its images saved; and the base
model's evaluation, shared by the runs of one process (a sweep worker) through a cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import torch

from diffexp.algorithms.stopping import NonFiniteError
from diffexp.evaluation import EVAL_IMAGE_DIR, grid_name, samples_name, within_prompt_diversity
from diffexp.evaluation.artifacts import PROMPTS_NAME
from diffexp.exploration import build_strategy
from diffexp.sampling.trajectory import Trajectory

#: base-model evaluations of this process, by evaluation set (see ``evaluate_base_model``)
_BASE_EVALUATIONS: dict[str, tuple[dict, int, Path]] = {}
_BASE_EVALUATIONS_KEPT = 8


class HeldOutEvaluation:
    def __init__(self, module: L.LightningModule):
        self.module = module

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The held-out set: the same prompts and noise at every evaluation of every run of a study
        (``run.eval_seed``), sampled without exploration at the base CFG scale, scored by the reward,
        the extra ``run.eval_rewards`` and the evaluators. Not counted as reward queries."""
        m = self.module
        run = m.config.run
        prompts = [p for p in m.eval_prompts for _ in range(run.eval_samples_per_prompt)]
        traj = self.sample(prompts, torch.Generator().manual_seed(run.eval_seed))
        m.eval_samples += len(traj)
        rewards = m.reward_fn(traj.images, traj.prompts)
        if not torch.isfinite(rewards).all():
            raise NonFiniteError(
                f"epoch {m.current_epoch}, evaluation: reward {m.config.reward.describe()!r} returned "
                f"{int((~torch.isfinite(rewards)).sum())} non-finite values on the evaluation set"
            )
        metrics = {
            "eval_reward_mean": rewards.mean().item(),
            "eval_reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "eval_diversity": within_prompt_diversity(traj.images, traj.prompts),
        }
        for name, reward in m.eval_rewards.items():
            metrics[f"eval_score_{name}"] = reward(traj.images, traj.prompts).mean().item()
        for evaluator in m.evaluators:
            metrics.update(evaluator(traj.images, traj.prompts))
        self.save_images(traj.images, traj.prompts, rewards)
        return metrics

    def evaluate_base_model(self) -> dict[str, float]:
        """:meth:`evaluate` before any update. The untrained module is the base model (a LoRA adapter
        starts with B = 0, so it adds exactly zero), so every run of a study with the same evaluation
        set gets the same numbers and images: a process that runs several trials (a sweep worker)
        evaluates the base model once per evaluation set and reuses it."""
        m = self.module
        key = self.base_key()
        cached = _BASE_EVALUATIONS.get(key)
        if cached is None:
            metrics = self.evaluate()
            folder = Path(m.run_dir) / EVAL_IMAGE_DIR
            _BASE_EVALUATIONS[key] = (dict(metrics), m.eval_samples, folder)
            while len(_BASE_EVALUATIONS) > _BASE_EVALUATIONS_KEPT:
                _BASE_EVALUATIONS.pop(next(iter(_BASE_EVALUATIONS)))
            return metrics
        metrics, samples, folder = cached
        names = [grid_name(0), samples_name(0), PROMPTS_NAME]
        if not all((folder / n).is_file() for n in names):  # the first run's files are gone: evaluate again
            _BASE_EVALUATIONS.pop(key)
            return self.evaluate_base_model()
        m.eval_samples += samples
        self.copy_files(folder, names)
        return dict(metrics)

    def base_key(self) -> str:
        """What the base model's evaluation depends on (not the adapter: it adds zero)."""
        m = self.module
        c = m.config
        fields = {
            "model": c.model.model_dump(mode="json"),
            "steps": c.sample.num_steps,
            "eta": c.sample.eta,
            "resolution": c.sample.resolution,
            "guidance": c.exploration.guidance_scale,
            "prompts": [str(p) for p in m.eval_prompts],
            "eval": {
                k: getattr(c.run, k)
                for k in ("eval_samples_per_prompt", "eval_seed", "eval_rewards", "evaluators", "precision")
            },
            "reward": c.reward.model_dump(mode="json"),
            "device": str(m.device),
            "threads": torch.get_num_threads(),
        }
        fields["model"].pop("lora", None)  # the adapter's shape does not change the base model
        return json.dumps(fields, sort_keys=True, default=str)

    def sample(self, prompts: list, generator: torch.Generator) -> Trajectory:
        """Samples at the base CFG scale with ``generator``, denoiser in eval mode (never training)."""
        m = self.module
        plan = build_strategy({"strategy": "baseline", "guidance_scale": m.config.exploration.guidance_scale}).plan(
            prompts, m.config.sample.num_steps, generator
        )
        was_training = m.denoiser.training
        m.denoiser.eval()
        sampler = getattr(m, "sampler", None) or m.make_sampler()
        traj = sampler.sample(plan, generator)
        m.denoiser.train(was_training)
        return traj

    def save_images(self, images: torch.Tensor, prompts: list[str], rewards: torch.Tensor) -> None:
        m = self.module
        if m.global_rank != 0:
            return
        from diffexp.visualize import captioned_grid, image_strip

        captions = [f"{p} | r={r:.2f}" for p, r in zip(prompts, rewards.tolist())]
        folder = Path(m.run_dir) / EVAL_IMAGE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        grid = folder / grid_name(m.reward_queries)
        captioned_grid(images, captions, ncols=max(2, m.config.run.eval_samples_per_prompt * 2), cell=96).save(grid)
        samples = folder / samples_name(m.reward_queries)
        image_strip(images).save(samples)
        (folder / PROMPTS_NAME).write_text(json.dumps(list(prompts)))
        self.log_artifacts([grid, samples, folder / PROMPTS_NAME])

    def copy_files(self, source: Path, names: list[str]) -> None:
        """Another run's evaluation files (the shared base-model evaluation) into this run's folder."""
        m = self.module
        if m.global_rank != 0:
            return
        folder = Path(m.run_dir) / EVAL_IMAGE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        copied = []
        for name in names:
            if source.resolve() != folder.resolve():
                shutil.copyfile(source / name, folder / name)
            copied.append(folder / name)
        self.log_artifacts(copied)

    def log_artifacts(self, paths: list[Path]) -> None:
        for logger in self.module.loggers:
            if hasattr(logger, "experiment") and hasattr(logger, "run_id") and logger.run_id:
                for path in paths:
                    logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=EVAL_IMAGE_DIR)
