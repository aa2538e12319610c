"""The noisiness families of :mod:`pretrain.degrade`: sensor, pipeline and codec noise.

Additive white Gaussian noise; spatially correlated luma/chroma noise as left by a
camera pipeline; row/column fixed-pattern noise; codec-like block noise
(macroblocking); Poisson shot noise plus read noise; and JPEG compression. Each is
``fn(x, s, g)``: ``(B, 3, H, W)`` float RGB in [0, 1], a strength ``s`` in [0, 1]
(0 = untouched) and a CPU generator from which every random draw comes. They are
registered, with their descriptions, in :data:`pretrain.degrade.families.FAMILIES`.
"""

from __future__ import annotations

import io
import math

import torch

from .filters import _cells, _grid_phase, _separable_gaussian, _unit_std


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
