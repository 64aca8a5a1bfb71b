"""Within-prompt diversity of a batch of samples: pixel distance and the Vendi score.

* :func:`within_prompt_diversity`: mean pairwise RMS pixel distance between samples of the same
  prompt, averaged over prompts.
* :func:`vendi_score` (Friedman & Dieng, "The Vendi Score", TMLR 2023): ``exp(H(lambda))`` with
  ``lambda`` the eigenvalues of ``K / n`` for a similarity matrix ``K`` with unit diagonal (here the
  cosine similarity of embeddings), i.e. the exponential of the von Neumann entropy. It reads as an
  effective number of distinct samples: 1 when all are the same, ``n`` when all are orthogonal.
"""

from __future__ import annotations

import numpy as np
import torch


def _groups(prompts: list[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return list(groups.values())


def within_prompt_diversity(images: torch.Tensor, prompts: list[str]) -> float:
    """Mean pairwise L2 distance (per pixel, RMS) between images of the same prompt, averaged over prompts."""
    flat = images.detach().float().flatten(1)
    values = []
    for idx in _groups(prompts):
        if len(idx) > 1:
            x = flat[idx]
            d = torch.cdist(x, x) / x.shape[1] ** 0.5
            n = len(idx)
            values.append((d.sum() / (n * (n - 1))).item())
    return float(np.mean(values)) if values else float("nan")


def vendi_score(embeddings: torch.Tensor) -> float:
    """Vendi score of ``n`` samples from their embeddings (n, d), with cosine similarity as the kernel."""
    x = torch.nn.functional.normalize(embeddings.detach().double(), dim=-1)
    n = x.shape[0]
    if n == 0:
        return float("nan")
    eigenvalues = torch.linalg.eigvalsh(x @ x.T / n).clamp(min=0)
    nonzero = eigenvalues[eigenvalues > 1e-12]
    return float(torch.exp(-(nonzero * nonzero.log()).sum()))


def within_prompt_vendi(embeddings: torch.Tensor, prompts: list[str]) -> float:
    """:func:`vendi_score` of each prompt's samples, averaged over prompts with at least two samples."""
    values = [vendi_score(embeddings[idx]) for idx in _groups(prompts) if len(idx) > 1]
    return float(np.mean(values)) if values else float("nan")
