"""Low-level image operations shared by the degradation families (:mod:`pretrain.degrade`).

sRGB <-> linear-light conversion, reflect padding (replicate where the image is too
small to reflect), convolution with a normalised 2-D kernel and a separable Gaussian
filter, the random phase and cell count of a block grid, and scaling noise to unit
standard deviation per image. All take and return ``(B, C, H, W)`` float tensors;
the only random draws (:func:`_grid_phase`) come from the ``generator`` passed in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["srgb_to_linear", "linear_to_srgb"]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def _pad(x: torch.Tensor, pad: tuple) -> torch.Tensor:
    """Reflect padding, or replicate where the image is too small to reflect."""
    return F.pad(x, pad, mode="replicate" if max(pad) >= min(x.shape[-2:]) else "reflect")


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with a normalised 2-D ``kernel`` (reflect padding)."""
    kernel = (kernel / kernel.sum()).to(x)
    kh, kw = kernel.shape
    padded = _pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    weight = kernel.expand(x.shape[1], 1, kh, kw)
    return F.conv2d(padded, weight, groups=x.shape[1])


def _separable_gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter of standard deviation ``sigma`` px: a row pass then a column pass."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    return _filter(_filter(x, k1[None, :]), k1[:, None])


def _grid_phase(block: int, g) -> tuple:
    """A random ``(row, column)`` offset in ``[0, block)`` of a block grid."""
    oy = int(torch.randint(block, (), generator=g))
    ox = int(torch.randint(block, (), generator=g))
    return oy, ox


def _cells(length: int, block: int) -> int:
    """How many blocks of ``block`` px cover ``length`` px (ceiling division)."""
    return -(-length // block)


def _unit_std(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` scaled to standard deviation 1 per image of the batch."""
    return noise / noise.flatten(1).std(dim=1).clamp(min=1e-8).view(-1, 1, 1, 1)
