"""The photos and baselines of ``benchmarks/enhance_quality.py``.

Two held-out sets, each chosen by one fixed rule (every ``holdout_every``-th file in sorted
order, :func:`attiqa_train.sampling.split_every_nth`), so a training run can leave them out:

- ``pairs``: clean photos darkened by :func:`camera_darken`, a camera-like pipeline that
  differs from the enhancer's training synthesis (``enhancement.synthesis``, which scales
  and gamma-curves the sRGB values and adds a colour cast): here the exposure is cut in
  *linear* light, Poisson-Gaussian sensor noise is added there, the result is sRGB-encoded
  and quantised to 8 bits. The clean photo is the reference.
- ``dark``: real under-exposed shots (no reference): the held-out files whose mean
  luminance is below a threshold (0.25 by default).
- ``normal`` (optional): the held-out clean photos as they are, each its own reference:
  does a method leave a well-exposed photo alone?

Baselines that need no training: ``input`` (do nothing), ``gamma`` (one global gamma per
image bringing its mean luminance to about 0.45) and ``clahe`` (kornia's contrast-limited
adaptive histogram equalisation of the L channel of CIELAB, a and b kept).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from attiqa_loss.io import list_images, read_image
from attiqa_train.sampling import split_every_nth

__all__ = ["holdout", "camera_darken", "BASELINES", "load_set"]


def holdout(files: Sequence[Path], every: int) -> Tuple[List[Path], List[Path]]:
    """``(training side, held out)``: every ``every``-th file of the sorted list is held out
    (:func:`attiqa_train.sampling.split_every_nth`, the rule training runs use)."""
    return split_every_nth(files, every)


def _to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def camera_darken(clean: torch.Tensor, seed: int) -> torch.Tensor:
    """A dark shot of ``clean`` (``(3, H, W)`` sRGB in [0, 1]): linear exposure cut by a
    factor in [1/40, 1/8] (-5.3 to -3 EV), Poisson-Gaussian noise in linear light (full
    well 2000 to 8000 electrons at white, read noise 2 to 6 electrons), sRGB encoding,
    8-bit quantisation. Everything drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(3, generator=g)
    factor = math.exp(math.log(1 / 40) + float(u[0]) * math.log(40 / 8))
    full_well = 2000 + 6000 * float(u[1])
    read = 2 + 4 * float(u[2])
    electrons = _to_linear(clean) * factor * full_well
    noisy = torch.poisson(electrons, generator=g) + read * torch.randn(electrons.shape, generator=g)
    return (_to_srgb(noisy / full_well) * 255).round() / 255


def _gamma(x: torch.Tensor) -> torch.Tensor:
    from attiqa_loss.measures import mean_luminance

    mean = float(mean_luminance(x[None]).clamp(1e-4, 0.9999))
    return x.clamp_min(0) ** (math.log(0.45) / math.log(mean))


def _clahe(x: torch.Tensor) -> torch.Tensor:
    import kornia

    lab = kornia.color.rgb_to_lab(x[None])
    lightness = kornia.enhance.equalize_clahe(lab[:, :1] / 100, clip_limit=2.0, grid_size=(8, 8))
    return kornia.color.lab_to_rgb(torch.cat([lightness * 100, lab[:, 1:]], dim=1))[0].clamp(0, 1)


#: The baselines that need no training: ``(3, H, W) -> (3, H, W)``.
BASELINES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "input": lambda x: x,
    "gamma": _gamma,
    "clahe": _clahe,
}


def load_set(kind: str, folder: Path, every: int, max_side: int, limit: int,
             max_luminance: float = 1.0) -> List[Dict[str, object]]:
    """The held-out images of a set: ``[{"name", "input", "reference" (pairs only)}]``.
    ``dark`` keeps only shots whose mean luminance is below ``max_luminance`` (a folder of
    exposure brackets also holds bright frames)."""
    from attiqa_loss.measures import mean_luminance

    items: List[Dict[str, object]] = []
    for i, path in enumerate(holdout(list_images([folder]), every)[1]):
        if limit and len(items) == limit:
            break
        image = read_image(path, max_side=max_side)
        if kind == "pairs":
            items.append({"name": path.stem, "input": camera_darken(image, seed=i), "reference": image})
        elif kind == "normal":
            items.append({"name": path.stem, "input": image, "reference": image})
        elif float(mean_luminance(image[None])) < max_luminance:
            items.append({"name": path.stem, "input": image})
    return items
