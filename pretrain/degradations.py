"""Graded, single-attribute degradations (docs/method.md, sections 3 and 6).

Each attribute has several *families* of degradation, each a function of a strength
``s`` in [0, 1]: ``s = 0`` leaves the image untouched, ``s = 1`` is the strongest level.
Families marked ``trained=True`` are the ones the synthetic teacher learns from; the
others are held back to test generalisation to degradations the model never saw
(motion blur when trained on Gaussian blur, gamma when trained on exposure, ...).

All functions take ``(B, 3, H, W)`` float RGB in [0, 1] and return the same shape in
[0, 1]. Randomness (noise, blur direction) comes only from the ``generator`` argument,
so a degradation is reproducible.

Example:
    >>> x = torch.rand(1, 3, 64, 64)
    >>> degrade(x, "sharpness", "gaussian", 0.5).shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import kornia
import torch
import torch.nn.functional as F

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.measures import luminance

__all__ = [
    "Family",
    "FAMILIES",
    "degrade",
    "list_families",
    "graded_strengths",
    "luminance",
    "srgb_to_linear",
    "linear_to_srgb",
]

Degrader = Callable[[torch.Tensor, float, Optional[torch.Generator]], torch.Tensor]


@dataclass(frozen=True)
class Family:
    attribute: str
    name: str
    fn: Degrader
    trained: bool
    description: str


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


def _gaussian_noise(x, s, g):
    sigma = 0.15 * s
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return (x + sigma * noise).clamp(0, 1)


def _correlated_noise(x, s, g):
    # Noise after a camera pipeline (demosaicking, denoising) is spatially correlated and
    # partly shared by the channels: low-pass filtered Gaussian noise with a random
    # correlation length (0.6-2 px) and luma share, rescaled to standard deviation 0.12 * s.
    sigma = 0.12 * s
    if sigma <= 0:
        return x
    corr = 0.6 + 1.4 * float(torch.rand((), generator=g))
    luma_share = float(torch.rand((), generator=g))
    b, _, h, w = x.shape
    noise = torch.randn((b, 3, h, w), generator=g)
    noise = torch.lerp(noise, noise[:, :1].expand(-1, 3, -1, -1), luma_share)
    noise = _separable_gaussian(noise, corr)
    noise = _unit_std(noise)
    return (x + sigma * noise.to(x)).clamp(0, 1)


def _pattern_noise(x, s, g):
    # Sensor fixed-pattern noise: random offsets per row and per column (read-out
    # banding) on top of white noise, sigma 0-0.1 in all.
    sigma = 0.1 * s
    if sigma <= 0:
        return x
    b, _, h, w = x.shape
    rows = torch.randn((b, 3, h, 1), generator=g)
    cols = torch.randn((b, 3, 1, w), generator=g)
    white = torch.randn((b, 3, h, w), generator=g)
    noise = (0.6 * rows + 0.4 * cols + 0.7 * white) / math.sqrt(0.36 + 0.16 + 0.49)
    return (x + sigma * noise.to(x)).clamp(0, 1)


def _block_noise(x, s, g):
    # Codec-like block noise ("macroblocking"): a random offset per square block of
    # 4, 8 or 16 px (random grid phase), mostly shared by the channels, so flat areas
    # turn into a patchwork of slightly different tiles with steps at the tile borders.
    # Standard deviation 0-0.08.
    sigma = 0.08 * s
    if sigma <= 0:
        return x
    block = (4, 8, 16)[int(torch.randint(3, (), generator=g))]
    oy, ox = _grid_phase(block, g)
    b, _, h, w = x.shape
    tiles = torch.randn((b, 3, _cells(h + oy, block), _cells(w + ox, block)), generator=g)
    tiles = torch.lerp(tiles, tiles[:, :1].expand(-1, 3, -1, -1), 0.7)
    tiles = _unit_std(tiles)
    noise = tiles.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)[..., oy : oy + h, ox : ox + w]
    return (x + sigma * noise.to(x)).clamp(0, 1)


def _poisson_gaussian_noise(x, s, g):
    if s <= 0:
        return x
    # Shot noise from a sensor collecting `photons` electrons at full scale, plus read noise.
    photons = 1000.0 * (1 - s) ** 2 + 8.0
    shot = torch.poisson((x.clamp(0, 1) * photons).cpu(), generator=g) / photons
    read = 0.02 * s * torch.randn(x.shape, generator=g)
    return (shot + read).to(x).clamp(0, 1)


def _jpeg(x, s, g):
    import numpy as np
    from PIL import Image

    quality = int(round(95 - 85 * s))
    out = []
    for img in x:
        arr = (img.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8).copy()
        out.append(torch.from_numpy(dec).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(x)


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
    ("contrast", "linear", _contrast_linear, True, "luminance pulled towards its mean (chroma kept), contrast x1 to x0.2"),
    ("contrast", "haze", _contrast_haze, False, "blend with grey airlight 0.8, transmission 1 to 0.25"),
    ("brightness", "exposure", _exposure, True, "exposure 0 to -5 EV in linear light"),
    ("brightness", "gamma", _gamma, False, "gamma 1 to 3.5 on sRGB values"),
    ("colorfulness", "desaturate", _desaturate, True, "blend towards Rec.601 luma, saturation 1 to 0"),
    ("colorfulness", "hsv", _hsv_saturation, False, "HSV saturation scaled 1 to 0"),
    ("noisiness", "gaussian", _gaussian_noise, True, "additive Gaussian noise, sigma 0-0.15"),
    ("noisiness", "correlated", _correlated_noise, True, "spatially correlated luma/chroma noise, sigma 0-0.12, 0.6-2 px"),
    ("noisiness", "pattern", _pattern_noise, True, "row/column fixed-pattern noise plus white noise, sigma 0-0.1"),
    ("noisiness", "block", _block_noise, False, "a random offset per 4, 8 or 16 px block (macroblocking), sigma 0-0.08"),
    ("noisiness", "poisson_gaussian", _poisson_gaussian_noise, False, "Poisson shot noise (1008-8 e-) + read noise"),
    ("noisiness", "jpeg", _jpeg, False, "JPEG compression, quality 95 to 10"),
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
