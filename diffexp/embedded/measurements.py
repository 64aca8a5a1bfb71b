"""Measurements of the embedded world: the figures of its model card and DiffExp's premises.

* prompt following of the base model (ground-truth accuracy on object and relation prompts);
* premise (a): raising CFG raises accuracy and lowers within-prompt diversity;
* premise (b): weighting an object's phrase (w ~ 1.3) raises that object's presence rate;
* the learned rewards: alignment vs ground truth (Spearman) on base-model samples, and the
  aesthetic predictor's fit of its hidden rule (held-out R^2).

Every figure comes from fixed-seed sampling, so reruns give the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binomtest, spearmanr
from tqdm.auto import tqdm

from diffexp.embedded.ground_truth import evaluate, presence
from diffexp.embedded.prompt_sets import get_prompt_set
from diffexp.evaluation import within_prompt_diversity
from diffexp.prompts.weighting import weight_phrases
from diffexp.sampling.plan import SamplingPlan
from diffexp.sampling.trajectory import TrajectorySampler


def sample_images(
    pipe,
    texts: list[str],
    guidance: float,
    steps: int = 20,
    seed: int = 0,
    batch: int = 64,
    conditioning: list[str] | None = None,
) -> torch.Tensor:
    """Fixed-seed samples (eta = 1, DDPO's sampler) of ``texts`` at one CFG scale."""
    sampler = TrajectorySampler(pipe, num_steps=steps, eta=1.0)
    conditioning = conditioning or texts
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            plan = SamplingPlan(
                texts[i : i + batch],
                conditioning[i : i + batch],
                torch.full((len(texts[i : i + batch]), steps), float(guidance)),
            )
            out.append(sampler.sample(plan, generator).images)
    return torch.cat(out)


def prompt_following(pipe, per_prompt: int = 4, guidance: float = 5.0, steps: int = 20) -> dict[str, float]:
    """Ground-truth accuracy per prompt set and split (20 DDIM steps, CFG 5 by default)."""
    out = {}
    for name in ("objects", "relations"):
        for split in ("train", "heldout"):
            texts = [p.text for p in get_prompt_set(name, split) for _ in range(per_prompt)]
            images = sample_images(pipe, texts, guidance, steps)
            out[f"accuracy_{name}_{split}"] = float(evaluate(images, texts).mean())
    return out


def cfg_premise(pipe, scales=(1.0, 2.0, 3.0, 5.0, 7.5), per_prompt: int = 4, steps: int = 20) -> list[dict[str, float]]:
    """Accuracy (all prompts, and objects / relations apart) and within-prompt diversity of
    base-model samples at each CFG scale."""
    objects = [p.text for p in get_prompt_set("objects", "train")]
    prompts = objects + [p.text for p in get_prompt_set("relations", "train")[::4]]
    texts = [t for t in prompts for _ in range(per_prompt)]
    is_object = np.arange(len(texts)) < len(objects) * per_prompt  # objects come first
    rows = []
    for scale in tqdm(scales, desc="cfg sweep", leave=False):
        images = sample_images(pipe, texts, scale, steps)
        correct = evaluate(images, texts)
        rows.append(
            {
                "cfg": scale,
                "accuracy": float(correct.mean()),
                "accuracy_objects": float(correct[is_object].mean()),
                "accuracy_relations": float(correct[~is_object].mean()),
                "diversity": within_prompt_diversity(images, texts),
            }
        )
    return rows


def paired_presence_change(plain: np.ndarray, weighted: np.ndarray) -> dict[str, float]:
    """Presence rates of the same samples (same prompts and noise) plain vs. weighted, with the
    exact McNemar test: of the samples whose outcome changed, is "gained" more likely than "lost"?"""
    plain, weighted = np.asarray(plain, dtype=bool), np.asarray(weighted, dtype=bool)
    gained, lost = int((weighted & ~plain).sum()), int((plain & ~weighted).sum())
    p_value = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return {
        "presence_plain": float(plain.mean()),
        "presence_weighted": float(weighted.mean()),
        "gained": gained,
        "lost": lost,
        "mcnemar_p": float(p_value),
    }


def phrase_premise(
    pipe,
    weight: float = 1.3,
    per_prompt: int = 8,
    guidance: float = 5.0,
    steps: int = 20,
    seeds: tuple[int, ...] = (0, 1),
) -> dict:
    """Presence rate of a composition's first and second object, plain vs. that object's phrase
    weighted by ``weight``, pooled over the noise ``seeds``. Plain and weighted samples share
    prompts and noise, so the change is measured pairwise: it is a few points and varies between
    noise seeds, hence two seeds pooled."""
    prompts = get_prompt_set("relations", "train")
    texts = [p.text for p in prompts for _ in range(per_prompt)]
    objects = [[p.labels.objects[index] for p in prompts for _ in range(per_prompt)] for index in (0, 1)]
    weighted = [
        [weight_phrases(p.text, {p.phrases[index]: weight}) for p in prompts for _ in range(per_prompt)]
        for index in (0, 1)
    ]

    def present(images: torch.Tensor, index: int) -> list[bool]:
        return [bool(presence(images[i : i + 1], o.colour, o.shape)[0]) for i, o in enumerate(objects[index])]

    plain_hits: list[list[bool]] = [[], []]  # per object, over all seeds
    weighted_hits: list[list[bool]] = [[], []]
    for seed in seeds:
        images = sample_images(pipe, texts, guidance, steps, seed=seed)
        for index in (0, 1):
            plain_hits[index] += present(images, index)
            weighted_hits[index] += present(
                sample_images(pipe, texts, guidance, steps, seed=seed, conditioning=weighted[index]), index
            )
    out: dict = {"weight": weight, "samples_per_condition": len(texts) * len(seeds), "seeds": list(seeds)}
    for index, name in enumerate(("first_object", "second_object")):
        out[name] = paired_presence_change(plain_hits[index], weighted_hits[index])
    return out


def alignment_vs_ground_truth(
    pipe, reward, per_prompt: int = 4, guidance: float = 5.0, steps: int = 20
) -> dict[str, float]:
    """Spearman correlation of the alignment reward with ground truth on base-model samples.

    Each prompt's samples are scored against that prompt and, as mismatched pairs, against
    another prompt of the set, so the ground truth has both outcomes even where the base model
    is good: the reward must rank matching pairs above non-matching ones.
    """
    return alignment_spearman(reward, *alignment_pairs(pipe, per_prompt, guidance, steps))


def alignment_pairs(
    pipe, per_prompt: int = 4, guidance: float = 5.0, steps: int = 20
) -> tuple[torch.Tensor, list[str], list[str]]:
    """The samples of :func:`alignment_vs_ground_truth`: images, their prompts, mismatched prompts."""
    prompts = [p.text for p in get_prompt_set("objects", "train")] + [
        p.text for p in get_prompt_set("relations", "train")
    ]
    texts = [t for t in prompts for _ in range(per_prompt)]
    images = sample_images(pipe, texts, guidance, steps)
    rng = np.random.default_rng(0)
    return images, texts, [texts[i] for i in rng.permutation(len(texts))]


def alignment_spearman(reward, images: torch.Tensor, texts: list[str], shuffled: list[str]) -> dict[str, float]:
    with torch.no_grad():
        scores = torch.cat([reward(images, texts), reward(images, shuffled)]).numpy()
    truth = np.concatenate([evaluate(images, texts), evaluate(images, shuffled)]).astype(float)
    own_scores, own_truth = scores[: len(texts)], truth[: len(texts)]
    return {
        "spearman_all_pairs": float(spearmanr(scores, truth).statistic),
        "spearman_own_prompts": float(spearmanr(own_scores, own_truth).statistic),
        "ground_truth_rate": float(own_truth.mean()),
    }


def aesthetic_fit(reward, n: int = 2000, seed: int = 4321) -> dict[str, float]:
    """Held-out R^2 of the aesthetic predictor against the hidden rule (world images, degraded as in training)."""
    from diffexp.embedded.reward_training import aesthetic_data

    images, target = aesthetic_data(np.random.default_rng(seed), n)
    with torch.no_grad():
        pred = reward(images, [""] * n)
    r2 = 1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    return {"heldout_r2": float(r2), "n": n}
