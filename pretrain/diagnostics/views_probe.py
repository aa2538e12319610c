"""Does ``AttiqaLoss(views=n)`` make an optimiser change the attribute, not a pixel pattern?

The probe behind ``benchmarks/views_robustness.py`` and a test of the shipped model.
Pixel-space gradient ascent on a frozen CNN finds small patterns that raise its score
without the change the score stands for. :func:`brightness_ascent` darkens photos
(exposure strength 0.7), runs Adam directly on their pixels asking ``AttiqaLoss`` for
brightness only, and reports:

- ``score_gain``: brightness score of the result minus that of the dark photo, both read
  the plain way (no views), so every row is judged by the same measure;
- ``luminance_gain``: mean pixel value of the result minus that of the dark photo;
- ``gain_per_luminance``: their ratio. A high ratio means the score rose without light:
  the optimiser found a pattern. Lower is more honest.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import torch

from attiqa_loss import ATTRIBUTES, AttiqaLoss

from ..degrade.families import degrade

__all__ = ["brightness_ascent"]


def brightness_ascent(
    photos: torch.Tensor, views: int, steps: int = 30, checkpoint: Optional[str] = None, lr: float = 0.01
) -> Tuple[Dict[str, float], torch.Tensor]:
    """Adam on the pixels of the darkened ``photos`` asking for brightness only.

    Returns the figures of one row (see the module docstring) and the optimised images
    ``(N, 3, H, W)``. The views' draws come from the global generator seeded with 0 inside
    ``fork_rng``: the caller's generator state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _ascent(photos, views, steps, checkpoint, lr)


def _ascent(photos, views, steps, checkpoint, lr):
    weights = {a: (1.0 if a == "brightness" else 0.0) for a in ATTRIBUTES}
    loss_fn = AttiqaLoss(weights=weights, checkpoint=checkpoint, views=views)
    dark = degrade(photos, "brightness", "exposure", 0.7)
    x = dark.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    elapsed = time.perf_counter() - start
    x = x.detach()
    with torch.no_grad():
        before = float(loss_fn.scores(dark)["brightness"].mean())
        after = float(loss_fn.scores(x)["brightness"].mean())
    lum = float(x.mean() - dark.mean())
    row = {
        "views": views,
        "steps": steps,
        "score_before": before,
        "score_after": after,
        "score_gain": after - before,
        "luminance_gain": lum,
        "gain_per_luminance": (after - before) / lum if lum > 0 else float("inf"),
        "s_per_step": elapsed / max(steps, 1),
    }
    return row, x
