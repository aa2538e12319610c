"""Simple handcrafted attribute measures: the baseline the learned model is compared with.

Each maps ``(B, 3, H, W)`` float RGB in [0, 1] to ``(B,)``, quality-aligned (higher =
sharper, more contrast, brighter, more colourful, cleaner); only their ranking matters.
The measures themselves live in :mod:`attiqa_loss.measures` (shared with ``enhancement``).
"""

from __future__ import annotations

import torch

from attiqa_loss.measures import (
    colourfulness,
    laplacian_variance,
    mean_luminance,
    noise_sigma,
    rms_contrast,
)

__all__ = ["handcrafted_scores"]


@torch.no_grad()
def handcrafted_scores(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 5)``: Laplacian variance, RMS contrast, mean luminance,
    Hasler-Suesstrunk colourfulness, negated Immerkaer noise sigma (ATTRIBUTES order),
    float32, all from :mod:`attiqa_loss.measures`."""
    x = x.float()
    return torch.stack(
        [laplacian_variance(x), rms_contrast(x), mean_luminance(x), colourfulness(x), -noise_sigma(x)],
        dim=1,
    )
