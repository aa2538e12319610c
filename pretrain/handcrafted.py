"""Simple handcrafted attribute measures: the baseline the learned model is compared with.

Each maps ``(B, 3, H, W)`` float RGB in [0, 1] to ``(B,)``, quality-aligned (higher =
sharper, more contrast, brighter, more colourful, cleaner); only their ranking matters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .degradations import luminance

__all__ = ["handcrafted_scores", "opponent_channels"]


def _laplacian_variance(y: torch.Tensor) -> torch.Tensor:
    k = y.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(y, k).flatten(1).var(dim=1)


def _noise_sigma(y: torch.Tensor) -> torch.Tensor:
    # Immerkaer (1996): a mask that cancels image structure up to second order.
    k = y.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)
    r = F.conv2d(y, k).abs().flatten(1).mean(dim=1)
    return math.sqrt(math.pi / 2) * r / 6


def opponent_channels(x: torch.Tensor) -> tuple:
    """Hasler and Suesstrunk's opponent channels ``(R - G, (R + G) / 2 - B)``: ``(B, 3, H, W)``
    -> two ``(B, H, W)`` tensors."""
    return x[:, 0] - x[:, 1], 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]


def _colourfulness(x: torch.Tensor) -> torch.Tensor:
    # Hasler and Suesstrunk (2003), on opponent channels.
    rg, yb = opponent_channels(x)
    std = (rg.flatten(1).var(1) + yb.flatten(1).var(1)).sqrt()
    mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
    return std + 0.3 * mean


@torch.no_grad()
def handcrafted_scores(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 5)``: Laplacian variance, RMS contrast, mean luminance,
    Hasler-Suesstrunk colourfulness, negated noise sigma (ATTRIBUTES order)."""
    y = luminance(x.float())
    return torch.stack(
        [
            _laplacian_variance(y),
            y.flatten(1).std(dim=1),
            y.flatten(1).mean(dim=1),
            _colourfulness(x.float()),
            -_noise_sigma(y),
        ],
        dim=1,
    )
