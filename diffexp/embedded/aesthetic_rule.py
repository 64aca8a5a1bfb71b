"""The hidden "aesthetic" rule of the embedded world: a score in [0, 10] from pixels only.

It plays the role of human aesthetic taste (the LAION aesthetic scale): the project
never optimises this rule directly, a learned scorer is trained to predict it and the
diffusion model is fine-tuned against that scorer, while the rule itself stays the
ground truth for measuring over-optimisation.

The rule. Per pixel, chroma = max(RGB) - min(RGB) and luminance Y = 0.299 R + 0.587 G
+ 0.114 B. Foreground weight w = smoothstep((chroma - 0.1) / 0.2) (objects are saturated,
backgrounds neutral); background weight = 1 - (w max-pooled over 3x3), which skips
object edges. With presence p = min(1, sum(w) / 20 px):

(a) vividness = p * (0.5 min(1, fg chroma / 0.8) + 0.5 min(1, |fg Y - bg Y| / 0.5)),
    fg/bg quantities being w-/background-weighted means: saturated objects that stand
    out from the background;
(b) composition = p * exp(-(d / 0.45)^2) * exp(-((f - 0.18) / 0.15)^2), with d the
    distance of the foreground centroid from the image centre (image spans [-1, 1]) and
    f = mean(w) the foreground fraction: centred content of a moderate size;
(c) background = exp(-((bg Y - 0.75) / 0.3)^2): light backgrounds are preferred, black
    ones are ugly;
(d) cleanliness = exp(-h / 0.015), with h the median over pixels of |Y - 3x3 box blur
    of Y| (the median ignores the minority of pixels on object edges): grain and noise
    are ugly, smooth gradients are not;

score = 10 * (0.30 a + 0.25 b + 0.20 c + 0.25 d).

Every term is a smooth function of local pixel statistics, so a small CNN can learn
it; it is vectorised over a batch and needs no gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffexp.embedded.scenes import to_tensor

#: Weights of the terms in the final score (they sum to 1, so scores lie in [0, 10]).
WEIGHTS: dict[str, float] = {"vividness": 0.30, "composition": 0.25, "background": 0.20, "cleanliness": 0.25}

_EPS = 1e-6


def _as_tensor(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] from a tensor (3, H, W) / (B, 3, H, W) or uint8 numpy HWC."""
    tensor = to_tensor(images) if isinstance(images, np.ndarray) else images.detach().float()
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(tensor.shape)}")
    return tensor.clamp(0, 1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum(dim=(-2, -1)) / (weights.sum(dim=(-2, -1)) + _EPS)


def aesthetic_terms(images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
    """The four terms of the rule, each (B,) in [0, 1] (see the module docstring)."""
    x = _as_tensor(images)
    _, _, h, w = x.shape
    chroma = x.amax(dim=1) - x.amin(dim=1)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    t = ((chroma - 0.1) / 0.2).clamp(0, 1)
    fg = t * t * (3 - 2 * t)
    bg = 1 - F.max_pool2d(fg[:, None], 3, stride=1, padding=1)[:, 0]
    presence = (fg.sum(dim=(-2, -1)) / 20.0).clamp(max=1.0)

    fg_chroma = _weighted_mean(chroma, fg)
    bg_luma = _weighted_mean(luma, bg)
    contrast = (_weighted_mean(luma, fg) - bg_luma).abs()
    vividness = presence * (0.5 * (fg_chroma / 0.8).clamp(max=1) + 0.5 * (contrast / 0.5).clamp(max=1))

    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device)[:, None].expand(h, w)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device)[None, :].expand(h, w)
    offset = torch.sqrt(_weighted_mean(xs, fg) ** 2 + _weighted_mean(ys, fg) ** 2)
    fraction = fg.mean(dim=(-2, -1))
    composition = presence * torch.exp(-((offset / 0.45) ** 2)) * torch.exp(-(((fraction - 0.18) / 0.15) ** 2))

    background = torch.exp(-(((bg_luma - 0.75) / 0.3) ** 2))

    smooth = F.avg_pool2d(F.pad(luma[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    grain = (luma - smooth).abs().flatten(1).median(dim=1).values
    cleanliness = torch.exp(-grain / 0.015)

    return {"vividness": vividness, "composition": composition, "background": background, "cleanliness": cleanliness}


def aesthetic_score(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Hidden aesthetic score, (B,) float tensor in [0, 10]."""
    terms = aesthetic_terms(images)
    return 10.0 * sum(WEIGHTS[name] * value for name, value in terms.items())
