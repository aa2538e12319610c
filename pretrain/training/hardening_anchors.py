"""Hardening's synthetic images: anchors with physical labels, and sharp/blurred step-edge pairs.

:func:`sample_anchors` draws flat fields, ramps and noise fields with the labels their
physics fixes (NaN where it fixes none), the thresholds of those labels being the
constants here (:data:`DARK`, :data:`GREY`, :data:`RAMP_CONTRAST`, :data:`BRIGHT`,
:data:`SATURATED`); :func:`sample_edge_pairs` draws two-tone step edges and their
blurred copies. Every draw comes from the generator passed in, in a fixed order, so a
training run is reproducible. How they are used in training:
:mod:`pretrain.training.hardening`.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from attiqa_loss.attributes import ATTRIBUTES

__all__ = ["ANCHOR_KINDS", "BRIGHT", "DARK", "GREY", "RAMP_CONTRAST", "SATURATED", "sample_anchors", "sample_edge_pairs"]

_A = {a: i for i, a in enumerate(ATTRIBUTES)}
#: Anchor kinds drawn by :func:`sample_anchors`, with equal odds.
ANCHOR_KINDS = ("flat", "ramp", "noise")
#: A flat field this dark (largest channel) is labelled brightness 0.
DARK = 0.06
#: A flat field whose channels differ by less than this is labelled colourfulness 0.
GREY = 0.02
#: A ramp whose luminance spans this much is labelled contrast 1 (``ramp_contrast``).
RAMP_CONTRAST = 0.5
#: A flat field at least this luminous (0.299 R + 0.587 G + 0.114 B) is labelled
#: brightness 1 (``full_labels``): a mid-grey field or brighter is well lit, the
#: brightness attribute's "1 = well lit". About half the non-dark flat fields.
BRIGHT = 0.5
#: A flat field whose channels span at least this much (max - min, the saturation of
#: HSV times its value) is labelled colourfulness 1 (``full_labels``): about half the
#: non-grey, non-dark flat fields.
SATURATED = 0.5


def _u(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=g)


def sample_anchors(n: int, size: int, g: torch.Generator, *, smooth_noise_free: bool = True,
                   ramp_contrast: bool = False, full_labels: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` anchor images ``(n, 3, size, size)`` in [0, 1] and labels ``(n, 5)`` (NaN = none).

    Kinds (see :mod:`pretrain.training.hardening`): ``flat``: a uniform field (a quarter of
    them grey, a quarter dark), labels sharpness 0, contrast 0, noisiness 1, plus brightness
    0 when dark and colourfulness 0 when grey; ``ramp``: a linear blend of two colours
    across the image in a random direction, sharpness 0 and noisiness 1; ``noise``: a random
    mean colour plus per-pixel Gaussian noise (sigma 0.08 to 0.3, colour or luma only),
    noisiness 0. With ``smooth_noise_free=False`` flat fields and ramps carry no noisiness
    label (only noise fields teach noisiness). With ``ramp_contrast`` half the ramps run
    from a dark to a bright colour, and a ramp whose luminance spans at least
    :data:`RAMP_CONTRAST` is labelled contrast 1: global contrast without any detail, so
    contrast cannot be learnt as "local detail" from the flat fields alone. With
    ``full_labels`` a flat field whose luminance is at least :data:`BRIGHT` is also labelled
    brightness 1 and one whose channels span at least :data:`SATURATED` colourfulness 1 (the
    images and every draw are the same with or without it: only labels are added). Every
    draw comes from ``g``.
    """
    images = torch.empty(n, 3, size, size)
    labels = torch.full((n, len(ATTRIBUTES)), float("nan"))
    ramp = torch.linspace(0, 1, size)
    for i in range(n):
        kind = ANCHOR_KINDS[int(torch.randint(len(ANCHOR_KINDS), (), generator=g))]
        colour = _u(g, 3)
        r = float(_u(g))
        if r < 0.25:
            colour = colour[:1].expand(3).clone()
        elif r < 0.5:
            colour = colour * DARK * float(_u(g))
        if kind == "flat":
            images[i] = colour.view(3, 1, 1).expand(3, size, size)
            labels[i, [_A["sharpness"], _A["contrast"]]] = 0.0
            if smooth_noise_free:
                labels[i, _A["noisiness"]] = 1.0
            if float(colour.max()) < DARK:
                labels[i, _A["brightness"]] = 0.0
            if float(colour.max() - colour.min()) < GREY:
                labels[i, _A["colorfulness"]] = 0.0
            if full_labels:
                if float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) >= BRIGHT:
                    labels[i, _A["brightness"]] = 1.0
                if float(colour.max() - colour.min()) >= SATURATED:
                    labels[i, _A["colorfulness"]] = 1.0
        elif kind == "ramp":
            other = _u(g, 3)
            if ramp_contrast and float(_u(g)) < 0.5:  # dark to bright
                colour, other = colour * 0.25, 0.75 + 0.25 * other
            theta = float(_u(g)) * 2 * torch.pi
            yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
            t = (xx - 0.5) * torch.cos(torch.tensor(theta)) + (yy - 0.5) * torch.sin(torch.tensor(theta))
            t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-6)
            images[i] = colour.view(3, 1, 1) * (1 - t) + other.view(3, 1, 1) * t
            labels[i, _A["sharpness"]] = 0.0
            if smooth_noise_free:
                labels[i, _A["noisiness"]] = 1.0
            if ramp_contrast:
                lum = 0.299 * images[i, 0] + 0.587 * images[i, 1] + 0.114 * images[i, 2]
                if float(lum.max() - lum.min()) >= RAMP_CONTRAST:
                    labels[i, _A["contrast"]] = 1.0
        else:
            mean = 0.2 + 0.6 * _u(g, 3)
            sigma = 0.08 + 0.22 * float(_u(g))
            channels = 3 if float(_u(g)) < 0.5 else 1
            noise = torch.randn((channels, size, size), generator=g).expand(3, size, size)
            images[i] = (mean.view(3, 1, 1) + sigma * noise).clamp(0, 1)
            labels[i, _A["noisiness"]] = 0.0
    return images, labels


def sample_edge_pairs(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``n`` two-tone step edges, then the same ``n`` edges blurred: ``(2n, 3, size, size)``.

    A step edge is the simplest detail there is, and a blurred copy of it has less: the
    pair teaches sharpness an order that flat-field and ramp anchors (both "no detail")
    cannot. Random colour pairs (some channel differs by >= 0.3), direction and offset;
    Gaussian blur of sigma 1.5 to 3 px. Every draw comes from ``g``.
    """
    from ..degrade.families import degrade

    axis = torch.linspace(-0.5, 0.5, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    sharp = torch.empty(n, 3, size, size)
    for i in range(n):
        a, b = _u(g, 2, 3, 1, 1)
        if float((a - b).abs().max()) < 0.3:
            b = 1 - a
        theta = float(_u(g)) * 2 * torch.pi
        offset = (float(_u(g)) - 0.5) * 0.5
        mask = ((xx * math.cos(theta) + yy * math.sin(theta)) > offset).float()[None]
        sharp[i] = a * (1 - mask) + b * mask
    blurred = torch.cat([degrade(sharp[i : i + 1], "sharpness", "gaussian", 0.5 + 0.5 * float(_u(g)))
                         for i in range(n)])
    return torch.cat([sharp, blurred])
