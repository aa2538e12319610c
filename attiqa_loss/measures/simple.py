"""The simple measures: luminance (:func:`luminance`, :func:`mean_luminance`,
:func:`rms_contrast`), colour (:func:`opponent_channels`, :func:`colourfulness`), detail and
noise (:func:`laplacian_variance`, :func:`noise_sigma`) and clipping
(:func:`clipped_fraction`), each ``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B,)``, plus the
input check :func:`_check_rgb` that every measure, NIQE included, applies."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_rgb(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, 3, H, W) RGB tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got dtype {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of gamma-encoded RGB: ``Y = 0.299 R + 0.587 G + 0.114 B``.

    ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [0, 1] (MATLAB's ``rgb2gray``
    formula; the degradations of ``pretrain`` use this function too)."""
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def laplacian_variance(x: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of the luminance: a sharpness measure.

    ``(B, 3, H, W)`` -> ``(B,)``: the luminance (:func:`luminance`) is convolved without
    padding (``valid``, ``(H-2) x (W-2)`` outputs) with the 4-neighbour Laplacian
    ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, and the unbiased variance of the outputs is
    returned. Units: luminance squared, on the [0, 1] scale. Higher = sharper (more fine
    detail); noise raises it too, so it is not a quality score on its own.
    """
    y = luminance(_check_rgb(x))
    k = y.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(y, k).flatten(1).var(dim=1)


def rms_contrast(x: torch.Tensor) -> torch.Tensor:
    """RMS contrast: the standard deviation (unbiased) of the luminance over the image.

    ``(B, 3, H, W)`` -> ``(B,)`` in luminance units on the [0, 1] scale (at most about
    0.5). Higher = more global contrast."""
    return luminance(_check_rgb(x)).flatten(1).std(dim=1)


def mean_luminance(x: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma (:func:`luminance`) over the image.

    ``(B, 3, H, W)`` -> ``(B,)`` in [0, 1] (gamma-encoded, not linear light). Higher =
    brighter; neither end is "better" by itself (0.4-0.5 is typical of photos)."""
    return luminance(_check_rgb(x)).flatten(1).mean(dim=1)


def opponent_channels(x: torch.Tensor) -> tuple:
    """Hasler and Suesstrunk's opponent channels ``(R - G, (R + G) / 2 - B)``: ``(B, 3, H, W)``
    -> two ``(B, H, W)`` tensors, each in [-1, 1]."""
    return x[:, 0] - x[:, 1], 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]


def colourfulness(x: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk's colourfulness (Proc. SPIE 5007, 2003).

    ``M = sqrt(var(rg) + var(yb)) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)`` with the opponent
    channels ``rg = R - G`` and ``yb = (R + G) / 2 - B`` (:func:`opponent_channels`) of the
    gamma-encoded RGB, unbiased variances over the pixels. ``(B, 3, H, W)`` -> ``(B,)`` on
    the [0, 1] scale (the paper's 8-bit values are 255 times larger; grey images give 0).
    Higher = more colourful."""
    rg, yb = opponent_channels(_check_rgb(x))
    std = (rg.flatten(1).var(1) + yb.flatten(1).var(1)).sqrt()
    mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
    return std + 0.3 * mean


def colour_cast(x: torch.Tensor) -> torch.Tensor:
    """How far the image's average colour is from grey: ``sqrt(mean(rg)^2 + mean(yb)^2)``,
    the second term of :func:`colourfulness` without its 0.3 factor (same opponent
    channels, same [0, 1] scale). A uniform tint raises it one for one, while the first
    term (the spread of colours) does not move: so it tells a colourfulness gain that
    comes from a cast from one that comes from more varied colour. ``(B, 3, H, W)`` ->
    ``(B,)``; 0 for an image whose average colour is grey. Neither end is better (a
    sunset has a cast); compare with the reference or the input."""
    rg, yb = opponent_channels(_check_rgb(x))
    return (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()


def noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """Immerkaer's fast noise estimate (CVIU 64(2), 1996) on the luminance.

    ``sigma = sqrt(pi / 2) / (6 (H - 2) (W - 2)) * sum |Y * N|`` with the mask
    ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (the difference of two Laplacians, which
    cancels image structure up to second order), ``valid`` convolution. For white Gaussian
    noise of standard deviation ``s`` on a smooth image it returns ``s``. ``(B, 3, H, W)``
    -> ``(B,)``: standard deviation of luminance noise on the [0, 1] scale. Higher =
    noisier (worse); strong texture also raises it."""
    y = luminance(_check_rgb(x))
    k = y.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)
    r = F.conv2d(y, k).abs().flatten(1).mean(dim=1)
    return math.sqrt(math.pi / 2) * r / 6


#: Slack when comparing with the clipping limits, far below one 16-bit step (1.5e-5), so
#: that 8-bit levels decoded in float32 count whatever rounding the division left.
_CLIP_EPS = 1e-6


def clipped_fraction(x: torch.Tensor, low: float = 1 / 255, high: float = 254 / 255) -> torch.Tensor:
    """Fraction of pixels where any channel is clipped.

    A pixel counts when at least one of its three channels is ``<= low + 1e-6`` or
    ``>= high - 1e-6`` (by default 8-bit levels 0-1 and 254-255, i.e. crushed shadows and
    blown highlights); the result is ``(number of such pixels) / (H * W)``.
    ``(B, 3, H, W)`` -> ``(B,)`` float64 in [0, 1]. Higher = more clipping (worse).
    """
    x = _check_rgb(x)
    if not low < high:
        raise ValueError(f"clipped_fraction needs low < high, got low={low}, high={high}")
    clipped = ((x <= low + _CLIP_EPS) | (x >= high - _CLIP_EPS)).any(dim=1)
    return clipped.flatten(1).double().mean(dim=1)
