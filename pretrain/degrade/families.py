"""Graded, single-attribute degradations (docs/method.md, sections 3 and 6).

Each attribute has several *families* of degradation, each a function of a strength
``s`` in [0, 1]: ``s = 0`` leaves the image untouched, ``s = 1`` is the strongest level.
Families marked ``trained=True`` are the ones the synthetic teacher learns from; the
others are held back to test generalisation to degradations the model never saw
(motion blur when trained on Gaussian blur, gamma when trained on exposure, ...).

All functions take ``(B, 3, H, W)`` float RGB in [0, 1] and return the same shape in
[0, 1]. Randomness (noise, blur direction) comes only from the ``generator`` argument,
so a degradation is reproducible.

This module holds the table of families (:data:`FAMILIES`), :func:`degrade` and the
contrast, brightness and colourfulness families; the sharpness families are in
:mod:`pretrain.degrade.sharpness`, the noisiness ones in :mod:`pretrain.degrade.noise`,
and the filters they share in :mod:`pretrain.degrade.filters`.

Example:
    >>> x = torch.rand(1, 3, 64, 64)
    >>> degrade(x, "sharpness", "gaussian", 0.5).shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import kornia
import torch

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.measures import luminance

from .filters import linear_to_srgb, srgb_to_linear
from .noise import _block_noise, _correlated_noise, _gaussian_noise, _jpeg, _pattern_noise, _poisson_gaussian_noise
from .sharpness import (_defocus_blur, _gaussian_blur, _median_filter, _motion_blur, _pixelate, _resample_blur,
                        _ringing, _texture_loss, _wavelet_codec)

__all__ = [
    "Family",
    "FAMILIES",
    "degrade",
    "list_families",
    "graded_strengths",
]

Degrader = Callable[[torch.Tensor, float, Optional[torch.Generator]], torch.Tensor]


@dataclass(frozen=True)
class Family:
    attribute: str
    name: str
    fn: Degrader
    trained: bool
    description: str


def _contrast_linear(x, s, g):
    # Luminance only: every channel gets the same offset, so chroma (R-G, B-Y) is kept and
    # the degradation does not also desaturate.
    y = luminance(x)
    mean = y.mean(dim=(2, 3), keepdim=True)
    return (x + (mean - y) * (0.8 * s)).clamp(0, 1)


def _contrast_haze(x, s, g):
    airlight = 0.8
    t = 1 - 0.75 * s
    return (x * t + airlight * (1 - t)).clamp(0, 1)


def _exposure(x, s, g):
    return linear_to_srgb(srgb_to_linear(x) * 2.0 ** (-5.0 * s))


def _gamma(x, s, g):
    return x.clamp(0, 1) ** (1.0 + 2.5 * s)


def _desaturate(x, s, g):
    return torch.lerp(x, luminance(x).expand_as(x), s)


def _hsv_saturation(x, s, g):
    hsv = kornia.color.rgb_to_hsv(x)
    hsv = torch.cat([hsv[:, :1], hsv[:, 1:2] * (1 - s), hsv[:, 2:]], dim=1)
    return kornia.color.hsv_to_rgb(hsv).clamp(0, 1)


def _cast(x, s, g):
    # A uniform tint is not colour: the image's own chroma fades while one tint of a random
    # hue covers it. The tint has opponent chroma (R - G, (R + G) / 2 - B) of length 0.2 s
    # and zero luminance (a grey offset changes neither opponent channel), so light and
    # contrast stay; the mean chroma may rise while the spread of colours falls.
    hue = float(torch.rand((), generator=g)) * 2 * math.pi
    rg, yb = math.cos(hue), math.sin(hue)
    tint = x.new_tensor([0.5 * rg, -0.5 * rg, -yb]).view(1, 3, 1, 1)
    tint = tint - luminance(tint)
    faded = torch.lerp(x, luminance(x).expand_as(x), 0.8 * s)
    return (faded + (0.2 * s) * tint).clamp(0, 1)


_DEFINITIONS = [
    ("sharpness", "gaussian", _gaussian_blur, True, "Gaussian blur, sigma 0-3 px"),
    ("sharpness", "defocus", _defocus_blur, False, "disk (defocus) blur, radius 0-4 px"),
    ("sharpness", "motion", _motion_blur, False, "linear motion blur, length 0-14 px, random direction"),
    ("sharpness", "resample", _resample_blur, False, "downscale by 1-4x and upscale back (bilinear)"),
    ("sharpness", "texture", _texture_loss, True, "edge-preserving smoothing (self-guided filter), texture std < 0-0.12 flattened"),
    ("sharpness", "wavelet", _wavelet_codec, False, "Haar wavelet codec: details below 0-0.25 dropped, 8 px grid"),
    ("sharpness", "median", _median_filter, False, "iterated 3x3 median, 0-4 passes"),
    ("sharpness", "ringing", _ringing, False, "ideal low-pass (Gibbs ringing), cutoff 0.5 to 0.1 cycles/px"),
    ("sharpness", "pixelate", _pixelate, False, "mean of 2-8 px blocks, nearest-neighbour upscale (mosaic)"),
    ("sharpness", "jpeg", _jpeg, False, "JPEG compression, quality 95 to 10 (detail lost, 8 px blocks)"),
    ("contrast", "linear", _contrast_linear, True, "luminance pulled towards its mean (chroma kept), contrast x1 to x0.2"),
    ("contrast", "haze", _contrast_haze, False, "blend with grey airlight 0.8, transmission 1 to 0.25"),
    ("brightness", "exposure", _exposure, True, "exposure 0 to -5 EV in linear light"),
    ("brightness", "gamma", _gamma, False, "gamma 1 to 3.5 on sRGB values"),
    ("colorfulness", "desaturate", _desaturate, True, "blend towards Rec.601 luma, saturation 1 to 0"),
    ("colorfulness", "hsv", _hsv_saturation, False, "HSV saturation scaled 1 to 0"),
    ("colorfulness", "cast", _cast, False,
     "own colours faded (saturation 1 to 0.2) under a uniform tint of random hue (chroma 0 to 0.2)"),
    ("noisiness", "gaussian", _gaussian_noise, True, "additive Gaussian noise, sigma 0-0.15"),
    ("noisiness", "correlated", _correlated_noise, True, "spatially correlated luma/chroma noise, sigma 0-0.12, 0.6-2 px"),
    ("noisiness", "pattern", _pattern_noise, True, "row/column fixed-pattern noise plus white noise, sigma 0-0.1"),
    ("noisiness", "block", _block_noise, False, "a random offset per 4, 8 or 16 px block (macroblocking), sigma 0-0.08"),
    ("noisiness", "poisson_gaussian", _poisson_gaussian_noise, False, "Poisson shot noise (1008-8 e-) + read noise"),
]

#: ``FAMILIES[attribute][name] -> Family``, in attribute order.
FAMILIES: Dict[str, Dict[str, Family]] = {a: {} for a in ATTRIBUTES}
for _attr, _name, _fn, _trained, _desc in _DEFINITIONS:
    FAMILIES[_attr][_name] = Family(_attr, _name, _fn, _trained, _desc)


def list_families(attribute: Optional[str] = None, *, trained: Optional[bool] = None) -> List[Family]:
    """Families of one attribute (or all), optionally only the trained or the held-back ones."""
    attrs = [attribute] if attribute is not None else list(ATTRIBUTES)
    out = []
    for a in attrs:
        if a not in FAMILIES:
            raise ValueError(f"unknown attribute {a!r}; expected one of {list(ATTRIBUTES)}")
        out += [f for f in FAMILIES[a].values() if trained is None or f.trained == trained]
    return out


def graded_strengths(levels: int) -> torch.Tensor:
    """``levels`` evenly spaced strengths from 0 (pristine) to 1 (strongest)."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return torch.linspace(0, 1, levels)


def degrade(
    images: torch.Tensor,
    attribute: str,
    family: str,
    strength: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Apply one family at one strength to a batch.

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1] (or ``(3, H, W)``).
        attribute: one of :data:`ATTRIBUTES`.
        family: a name in ``FAMILIES[attribute]``.
        strength: in [0, 1]; 0 returns the input unchanged.
        generator: CPU generator for the random parts (noise, blur direction).

    Returns:
        The degraded images, same shape, in [0, 1].
    """
    if attribute not in FAMILIES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {list(ATTRIBUTES)}")
    if family not in FAMILIES[attribute]:
        raise ValueError(f"unknown {attribute} family {family!r}; expected one of {list(FAMILIES[attribute])}")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    single = images.ndim == 3
    x = images[None] if single else images
    if strength == 0.0:
        return images
    out = FAMILIES[attribute][family].fn(x, strength, generator)
    return out[0] if single else out
