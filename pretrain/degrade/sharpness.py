"""The sharpness families of :mod:`pretrain.degrade`: blur, texture loss and codec-like detail loss.

Gaussian, defocus (disk), motion and resampling blur; edge-preserving smoothing that
flattens texture; a mosaic (pixelation); the quantiser of a minimal Haar wavelet codec;
iterated 3x3 median filtering; and ideal low-pass filtering with Gibbs ringing. Each is
``fn(x, s, g)``: ``(B, 3, H, W)`` float RGB in [0, 1], a strength ``s`` in [0, 1]
(0 = untouched) and a CPU generator for the random parts (blur direction, grid phase).
They are registered, with their descriptions, in :data:`pretrain.degrade.families.FAMILIES`.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

from .filters import _cells, _filter, _grid_phase, _pad, _separable_gaussian


def _gaussian_blur(x, s, g):
    sigma = 3.0 * s
    if sigma < 0.05:
        return x
    return _separable_gaussian(x, sigma)


def _defocus_blur(x, s, g):
    radius = 4.0 * s
    if radius < 0.3:
        return x
    r = math.ceil(radius)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    # Anti-aliased disk: coverage falls off linearly over one pixel at the rim.
    kernel = (radius + 0.5 - torch.sqrt(xx**2 + yy**2)).clamp(0, 1)
    return _filter(x, kernel)


def _motion_blur(x, s, g):
    length = 14.0 * s
    if length < 1.0:
        return x
    angle = float(torch.rand((), generator=g)) * math.pi
    r = math.ceil(length / 2)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    # Distance of each tap to the line segment through the centre at `angle`.
    along = xx * math.cos(angle) + yy * math.sin(angle)
    across = -xx * math.sin(angle) + yy * math.cos(angle)
    kernel = (1 - across.abs()).clamp(0, 1) * (length / 2 + 0.5 - along.abs()).clamp(0, 1)
    return _filter(x, kernel)


def _resample_blur(x, s, g):
    factor = 1.0 + 3.0 * s
    if factor < 1.05:
        return x
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(4, round(h / factor)), max(4, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def _texture_loss(x, s, g):
    # Edge-preserving smoothing (a self-guided filter, He et al. 2010): detail whose local
    # standard deviation is below ~0.12 * s is flattened while strong edges stay, the
    # "waxy" texture loss of an over-eager denoiser or of heavy compression.
    eps = (0.12 * s) ** 2
    if eps < 1e-6:
        return x
    r = 3

    def box(t):
        return F.avg_pool2d(_pad(t, (r, r, r, r)), 2 * r + 1, stride=1)

    mean = box(x)
    var = (box(x * x) - mean * mean).clamp(min=0)
    a = var / (var + eps)
    b = mean - a * mean
    return (box(a) * x + box(b)).clamp(0, 1)


def _pixelate(x, s, g):
    # Mosaic: the mean of each block of 2-8 px (random grid phase), shown by
    # nearest-neighbour upscaling, as when a small image is enlarged without interpolation.
    block = 1 + round(7 * s)
    if block < 2:
        return x
    h, w = x.shape[-2:]
    oy, ox = _grid_phase(block, g)
    padded = F.pad(x, (ox, block, oy, block), mode="replicate")
    small = F.avg_pool2d(padded, block, stride=block)
    big = small.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return big[..., oy : oy + h, ox : ox + w]


def _wavelet_codec(x, s, g):
    # The quantiser of a minimal wavelet codec: a 3-level orthonormal Haar transform of
    # YCbCr on an 8 px grid with a random phase, detail coefficients below 0.25 * s
    # dropped (hard threshold, the dead zone of a coarse quantiser). Texture turns into
    # flat blocks while strong edges survive with staircase artefacts beside them.
    # (A wavelet codec, not JPEG: no DCT, no quantisation tables, no chroma subsampling;
    # JPEG stays an unseen family.)
    t = 0.25 * s
    if t <= 0:
        return x
    levels, block = 3, 8
    h, w = x.shape[-2:]
    oy, ox = _grid_phase(block, g)
    pad_y = _cells(h + oy, block) * block - h - oy
    pad_x = _cells(w + ox, block) * block - w - ox
    a = F.pad(kornia.color.rgb_to_ycbcr(x), (ox, pad_x, oy, pad_y), mode="replicate")
    details = []
    for _ in range(levels):
        p00, p01, p10, p11 = a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]
        a = (p00 + p01 + p10 + p11) / 2
        d = torch.stack([p00 - p01 + p10 - p11, p00 + p01 - p10 - p11, p00 - p01 - p10 + p11]) / 2
        details.append(d * (d.abs() > t))
    for dh, dv, dd in reversed(details):
        top = torch.stack([a + dh + dv + dd, a - dh + dv - dd], -1).flatten(-2) / 2
        bottom = torch.stack([a + dh - dv - dd, a - dh - dv + dd], -1).flatten(-2) / 2
        a = torch.stack([top, bottom], -2).flatten(-3, -2)
    return kornia.color.ycbcr_to_rgb(a[..., oy : oy + h, ox : ox + w]).clamp(0, 1)


def _median3(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    patches = F.unfold(_pad(x, (1, 1, 1, 1)), 3)  # (B, C * 9, H * W)
    return patches.view(b, c, 9, h * w).median(dim=2).values.view(b, c, h, w)


def _median_filter(x, s, g):
    # Iterated 3x3 median, the classic impulse-noise filter: fine texture and thin lines
    # melt into flat, painterly patches while strong edges stay one-pixel steps. 0-4
    # passes; a fractional pass blends two successive results, so strength is continuous.
    passes = 4.0 * s
    if passes <= 0:
        return x
    whole = math.ceil(passes)
    for _ in range(whole - 1):
        x = _median3(x)
    return torch.lerp(x, _median3(x), passes - (whole - 1))


def _ringing(x, s, g):
    # Band-limiting by an ideal (brick-wall) low-pass filter, cutoff 0.5 -> 0.1 cycles/px
    # on a geometric scale: blur with Gibbs ringing (over- and undershoot beside edges),
    # as left by sinc resampling and by coarse truncation of high frequencies.
    if s <= 0:
        return x
    cutoff = 0.5 * 0.2**s
    h, w = x.shape[-2:]
    p = min(h, w) // 2  # reflect padding keeps the FFT's wrap-around away from the image
    padded = _pad(x, (p, p, p, p))
    ph, pw = padded.shape[-2:]
    radius = torch.sqrt(torch.fft.fftfreq(ph).view(-1, 1) ** 2 + torch.fft.rfftfreq(pw).view(1, -1) ** 2)
    spectrum = torch.fft.rfft2(padded) * (radius <= cutoff).to(padded.device)
    out = torch.fft.irfft2(spectrum, s=(ph, pw))
    return out[..., p : p + h, p : p + w].clamp(0, 1)
