"""Synthetic training pairs: kornia-based degradations and paired geometric augmentation.

Every random draw takes an explicit ``torch.Generator`` (CPU), so a training step's
pairs are a pure function of ``(seed, step, rank)`` (:func:`attiqa_train.sampling.step_generator`)
and a resumed run replays them exactly. All images are float RGB in [0, 1].
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import kornia
import torch

__all__ = [
    "uniform",
    "darken",
    "apply_color_cast",
    "add_gaussian_noise",
    "add_poisson_gaussian_noise",
    "srgb_to_linear",
    "linear_to_srgb",
    "add_sensor_noise",
    "quantize",
    "NOISE_SPACES",
    "add_light_sources",
    "keep_bright_regions",
    "synthesize_low_light",
    "synthesize_low_light_pair",
    "synthesize_noise",
    "augment_together",
]


def uniform(bounds: Tuple[float, float], n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from ``U(bounds[0], bounds[1])`` as a float32 ``(n,)`` CPU tensor."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _per_image(value: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return value.to(images.device, images.dtype).view(-1, *([1] * (images.ndim - 1)))


def _randn_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU so the same generator gives the same noise on every device.
    return torch.randn(images.shape, generator=generator).to(images.device, images.dtype)


def darken(images: torch.Tensor, gain: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Under-exposure: ``gain * x ** gamma`` per image (kornia ``adjust_gamma``).

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1].
        gain: ``(B,)`` exposure factors in (0, 1]; smaller is darker.
        gamma: ``(B,)`` exponents; above 1 crushes shadows further.

    Returns:
        ``(B, 3, H, W)`` in [0, 1], never brighter than ``images`` when gain <= 1, gamma >= 1.
    """
    return kornia.enhance.adjust_gamma(images, gamma.to(images.device), gain.to(images.device))


def apply_color_cast(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Multiply each channel by ``gains`` ``(B, 3)`` (a white-balance error), clipped to [0, 1]."""
    return (images * gains.to(images.device, images.dtype)[:, :, None, None]).clamp(0, 1)


def add_gaussian_noise(images: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise with per-image standard deviation ``sigma`` ``(B,)``; clipped to [0, 1]."""
    return (images + _per_image(sigma, images) * _randn_like(images, generator)).clamp(0, 1)


def add_poisson_gaussian_noise(
    images: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Sensor noise with variance ``shot * x + read ** 2`` (signal-dependent shot noise plus
    read noise), in the usual heteroscedastic Gaussian approximation of the Poisson part.

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1] (the clean signal ``x``).
        shot: ``(B,)`` Poisson scale ``a`` (``a = 1 / photons at full scale``).
        read: ``(B,)`` read-noise standard deviation ``b``.
        generator: CPU generator for the noise.

    Returns:
        ``(B, 3, H, W)`` noisy images clipped to [0, 1].
    """
    var = _per_image(shot, images) * images.clamp(min=0) + _per_image(read, images) ** 2
    return (images + var.sqrt() * _randn_like(images, generator)).clamp(0, 1)


#: Where :func:`synthesize_low_light_pair` adds its sensor noise.
NOISE_SPACES = ("display", "linear")


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding curve (IEC 61966-2-1): encoded ``[0, 1]`` -> linear light ``[0, 1]``; shape-preserving."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB encoding curve: linear light (clipped to ``[0, 1]``) -> encoded ``[0, 1]``; shape-preserving."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def add_sensor_noise(
    images: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Sensor noise where a sensor makes it: in linear light, before the sRGB curve.

    The sRGB images are decoded to linear light ``L``, get Poisson-Gaussian noise of
    variance ``shot * L + read ** 2`` (:func:`add_poisson_gaussian_noise`; ``shot`` is
    ``1 / (photo-electrons at white)``, ``read`` the read noise over that full scale),
    are clipped at 0 and 1 and encoded again. The encoding is steep near black (slope
    12.92), so the noise of a dark shot is stronger, relative to its signal, than the
    same model added to the encoded values: the noise a camera's JPEG of a dark scene shows.

    Args:
        images: ``(B, 3, H, W)`` sRGB in [0, 1].
        shot, read: ``(B,)`` per image.
        generator: CPU generator for the noise.

    Returns:
        ``(B, 3, H, W)`` sRGB in [0, 1].
    """
    return linear_to_srgb(add_poisson_gaussian_noise(srgb_to_linear(images), shot, read, generator))


def quantize(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Round to ``2 ** bits`` levels (an 8-bit file: ``bits=8``); ``bits=0`` returns ``images``."""
    if bits == 0:
        return images
    levels = 2**bits - 1
    return torch.round(images.clamp(0, 1) * levels) / levels


def _pixel_grid(h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates, ``(h, 1)`` and ``(1, w)`` float32, for masks drawn per image."""
    return torch.arange(h, dtype=torch.float32).view(h, 1), torch.arange(w, dtype=torch.float32).view(1, w)


def add_light_sources(
    clean: torch.Tensor,
    low: torch.Tensor,
    generator: torch.Generator,
    *,
    probability: float,
    count: Tuple[int, int] = (1, 3),
    radius: Tuple[float, float] = (0.03, 0.12),
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Paste the same bright light sources (lamps, lit windows) into a clean photo and its
    darkened version.

    A light source is far brighter than the scene around it: a shorter exposure that
    darkens the scene leaves it near white. Darkening a well-exposed photo never makes
    such a picture (every pixel of the dark version is dim), so an enhancer trained on it
    learns "a bright region means the image is well exposed" and leaves the dark pixels
    around a lamp dark (a halo). With probability ``probability`` an image gets
    ``count[0]`` to ``count[1]`` soft-edged discs of radius ``radius`` (fractions of the
    shorter side) in a pale random tint (each channel 0.75 to 1 of the largest, which is
    0.85 to 1), blended into both images with the same mask.

    Args:
        clean, low: ``(B, 3, H, W)`` in [0, 1]: the target and the darkened input.
        generator: CPU generator (draws nothing when ``probability`` is 0).

    Returns:
        ``(clean, low)`` with the light sources.
    """
    if probability <= 0:
        return clean, low
    b, _, h, w = clean.shape
    ys, xs = _pixel_grid(h, w)
    clean, low = clean.clone(), low.clone()
    for i in range(b):
        if float(torch.rand(1, generator=generator)) >= probability:
            continue
        for _ in range(int(torch.randint(count[0], count[1] + 1, (1,), generator=generator))):
            cy, cx = float(torch.rand(1, generator=generator)) * h, float(torch.rand(1, generator=generator)) * w
            r = max(1.5, float(uniform(radius, 1, generator)) * min(h, w))
            tint = 1 - 0.25 * torch.rand(3, generator=generator)
            colour = tint / tint.max() * float(uniform((0.85, 1.0), 1, generator))
            dist = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
            alpha = ((r - dist) / max(1.0, 0.3 * r) + 0.5).clamp(0, 1).to(clean.device, clean.dtype)
            paint = colour.to(clean.device, clean.dtype).view(3, 1, 1)
            clean[i] = clean[i] * (1 - alpha) + paint * alpha
            low[i] = low[i] * (1 - alpha) + paint * alpha
    return clean, low


def keep_bright_regions(clean: torch.Tensor, low: torch.Tensor, generator: torch.Generator, *,
                        probability: float) -> torch.Tensor:
    """Give back a region of the darkened shot its original exposure: a backlit scene.

    A shot of a dark room with a sunlit window is under-exposed inside and well exposed
    (or over-exposed) in the window; the enhancer must brighten the one and leave the
    other. Whole-image darkening never shows that. With probability ``probability`` an
    image gets one soft-edged rectangle (each side 25 to 70% of the image's, anywhere)
    in which ``low`` is replaced by ``clean``; the target stays ``clean``.

    Args:
        clean, low: ``(B, 3, H, W)`` in [0, 1].
        generator: CPU generator (draws nothing when ``probability`` is 0).

    Returns:
        ``low`` with the regions restored, ``(B, 3, H, W)``.
    """
    if probability <= 0:
        return low
    b, _, h, w = clean.shape
    ys, xs = _pixel_grid(h, w)
    low = low.clone()
    for i in range(b):
        if float(torch.rand(1, generator=generator)) >= probability:
            continue
        rh, rw = (float(v) for v in uniform((0.25, 0.7), 2, generator))
        top, left = (float(v) for v in torch.rand(2, generator=generator))
        top, left = top * (1 - rh) * h, left * (1 - rw) * w
        edge = max(1.0, 0.05 * min(h, w))

        def ramp(coord: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
            return (((coord - lo) / edge).clamp(0, 1) * ((hi - coord) / edge).clamp(0, 1))

        mask = (ramp(ys, top, top + rh * h) * ramp(xs, left, left + rw * w)).to(low.device, low.dtype)
        low[i] = low[i] * (1 - mask) + clean[i] * mask
    return low


def synthesize_low_light_pair(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    exposure: Tuple[float, float] = (0.05, 0.5),
    gamma: Tuple[float, float] = (1.0, 2.5),
    color_cast: float = 0.1,
    shot_noise: Tuple[float, float] = (0.0, 0.01),
    read_noise: Tuple[float, float] = (0.0, 0.02),
    keep: float = 0.0,
    light_sources: float = 0.0,
    bright_regions: float = 0.0,
    noise_space: str = "display",
    quantize_bits: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn well-exposed photos into plausible low-light shots: ``(low, target)``.

    Per image: exposure gain and gamma darkening (:func:`darken`), a colour cast (channel
    gains ``1 + U(-color_cast, color_cast)`` rescaled to mean 1, so it shifts hue, not
    brightness), then Poisson-Gaussian sensor noise on the dark signal. Each parameter is
    drawn uniformly from its ``(min, max)`` range.

    With probability ``keep`` an image is left at its exposure (no darkening, no cast; the
    noise is still added), so an enhancer also learns to leave a well-exposed photo alone.

    With ``light_sources > 0`` that fraction of the images also gets bright light sources,
    the same in the target and the dark shot (:func:`add_light_sources`, before the
    noise); without, the target is ``clean`` itself. With ``bright_regions > 0`` that
    fraction keeps its exposure in one large region (a backlit scene,
    :func:`keep_bright_regions`, before the light sources).

    ``noise_space``: ``"display"`` (the first version) adds the noise to the encoded
    values; ``"linear"`` adds it in linear light before the sRGB curve
    (:func:`add_sensor_noise`; ``shot_noise`` and ``read_noise`` are then in linear-light
    units, so they need smaller ranges). ``quantize_bits``: 0 keeps the float values, 8
    rounds the dark shot to the levels of an 8-bit file (the deep shadows of a dark JPEG
    hold only a few levels, which the gain then spreads apart). Neither draws anything.

    Args:
        clean: ``(B, 3, H, W)`` float RGB in [0, 1].
        generator: CPU generator (all draws, including the noise; ``keep > 0`` draws once
            more per image, ``bright_regions > 0`` and ``light_sources > 0`` more again,
            all before the noise, so with all three 0 the draws are those of the first
            version).

    Returns:
        ``(low, target)``, each ``(B, 3, H, W)`` in [0, 1].
    """
    b = clean.shape[0]
    gain, gam = uniform(exposure, b, generator), uniform(gamma, b, generator)
    cast = 1 + (2 * torch.rand(b, 3, generator=generator) - 1) * color_cast
    cast = cast / cast.mean(dim=1, keepdim=True)
    shot, read = uniform(shot_noise, b, generator), uniform(read_noise, b, generator)
    if keep > 0:
        kept = torch.rand(b, generator=generator) < keep
        gain, gam = torch.where(kept, 1.0, gain), torch.where(kept, 1.0, gam)
        cast = torch.where(kept[:, None], 1.0, cast)
    low = apply_color_cast(darken(clean, gain, gam), cast)
    low = keep_bright_regions(clean, low, generator, probability=bright_regions)
    target, low = add_light_sources(clean, low, generator, probability=light_sources)
    if noise_space not in NOISE_SPACES:
        raise ValueError(f"noise_space must be one of {list(NOISE_SPACES)}, got {noise_space!r}")
    add_noise = add_sensor_noise if noise_space == "linear" else add_poisson_gaussian_noise
    return quantize(add_noise(low, shot, read, generator), quantize_bits), target


def synthesize_low_light(clean: torch.Tensor, generator: torch.Generator, **settings) -> torch.Tensor:
    """The dark shots of :func:`synthesize_low_light_pair` (same keywords, same draws),
    ``(B, 3, H, W)`` in [0, 1], for syntheses whose target is ``clean`` itself.

    Raises:
        ValueError: ``light_sources > 0``, which changes the target too (use the pair).
    """
    if settings.get("light_sources", 0.0) > 0:
        raise ValueError("light_sources > 0 paints the target too: use synthesize_low_light_pair, "
                         f"got light_sources={settings['light_sources']}")
    return synthesize_low_light_pair(clean, generator, **settings)[0]


def synthesize_noise(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma: Tuple[float, float] = (0.01, 0.2),
    shot_noise: Tuple[float, float] = (0.001, 0.05),
    read_noise: Tuple[float, float] = (0.0, 0.05),
    poisson_probability: float = 0.5,
) -> torch.Tensor:
    """Noisy versions of clean photos for denoising.

    Per image, with probability ``poisson_probability`` Poisson-Gaussian noise
    (``shot_noise``, ``read_noise`` ranges), otherwise Gaussian noise of standard deviation
    drawn from ``sigma``.

    Args:
        clean: ``(B, 3, H, W)`` float RGB in [0, 1].
        generator: CPU generator.

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    b = clean.shape[0]
    use_pg = torch.rand(b, generator=generator) < poisson_probability
    sig = uniform(sigma, b, generator)
    shot, read = uniform(shot_noise, b, generator), uniform(read_noise, b, generator)
    # Gaussian noise is Poisson-Gaussian noise with no shot part.
    shot = torch.where(use_pg, shot, torch.zeros_like(shot))
    read = torch.where(use_pg, read, sig)
    return add_poisson_gaussian_noise(clean, shot, read, generator)


def augment_together(
    images: Sequence[torch.Tensor],
    size: int,
    generator: torch.Generator,
    *,
    flips: bool = True,
    rot90: bool = True,
) -> List[torch.Tensor]:
    """One random crop, flips and quarter-turn, applied identically to every image.

    Use it on an (input, target) pair so they stay aligned. An image smaller than
    ``size`` is first upscaled (kornia ``resize``, shorter side to ``size``).

    Args:
        images: tensors of the same shape ``(3, H, W)``.
        size: side of the square crop.
        generator: CPU generator for the crop position, flips and rotation.
        flips: random horizontal and vertical flips.
        rot90: random rotation by a multiple of 90 degrees.

    Returns:
        List of ``(3, size, size)`` tensors, in the order given.
    """
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images to augment together must share one shape, got {sorted(shapes)}")
    out = list(images)
    h, w = out[0].shape[-2:]
    if min(h, w) < size:
        out = [kornia.geometry.transform.resize(im[None], size, side="short", antialias=True)[0] for im in out]
        h, w = out[0].shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    hflip, vflip = (torch.rand(2, generator=generator) < 0.5).tolist()
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    out = [im[..., top : top + size, left : left + size] for im in out]
    if flips and hflip:
        out = [kornia.geometry.transform.hflip(im) for im in out]
    if flips and vflip:
        out = [kornia.geometry.transform.vflip(im) for im in out]
    if rot90 and turns:
        out = [torch.rot90(im, turns, dims=(-2, -1)) for im in out]
    return [im.contiguous() for im in out]
