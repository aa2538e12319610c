"""How the enhancer's last layer becomes an image: four output formulations.

The U-Net (:mod:`enhancement.unet`) ends in one convolution whose channels one of these
functions turns into the output, always in [0, 1] without clamping (a clamp cuts the
gradient), and the identity when the head's output is zero (the network starts there):

- ``residual``: :func:`bounded_residual`, 3 channels: each pixel moves a fraction of its
  way towards 1 or 0. Free-form: it can also paint texture or a flat colour.
- ``curves``: :func:`apply_curves`, ``3 * n`` channels: ``n`` per-pixel, per-channel
  quadratic light-enhancement curves ``x + a * x * (1 - x)`` applied one after another,
  the curve family of Zero-DCE (Guo et al., CVPR 2020). Monotonic in the input for
  ``|a| <= 1``, so the order of intensities inside each channel is kept.
- ``gain``: :func:`apply_gain`, 1 channel (+ 3 for an optional small residual): one
  exposure gain per pixel. The bounded exposure curve ``f(v) = G * v / (1 + (G - 1) * v)``
  (slope ``G`` in the shadows, 1 at white) is applied to the pixel's largest channel
  ``v = max(R, G, B)`` and all three channels are scaled by the same factor ``f(v) / v``:
  R:G:B ratios, so hue and saturation, are kept exactly, and nothing clips. The gain map is made smooth and edge-aware: averaged over
  ``scale`` x ``scale`` blocks, then brought back to full resolution with a fast
  guided filter (He and Sun, 2015) steered by the input's luminance, so it can follow
  the input's edges (no halos) but cannot add structure of its own: a flat input
  gives a flat output. The log-gain is the head's output itself (``gain_param="log"``),
  capped at ``+-log(gain_max)`` by :func:`inward_clamp` *before* the upsampling and again
  after it: past the cap a pixel still hears a loss that wants it back inside (nothing
  sticks there), but nothing pushes it further out, and the upsampling only ever sees
  bounded values. ``"tanh"`` (``log(gain_max) * tanh(logit)``, the first version)
  flattens near the bound and a run that pushes every pixel there stays stuck at ``gain_max``.
  The optional residual (for noise, which a gain cannot remove) is either free
  (:func:`bounded_residual`) or a high-pass (:func:`highpass_residual`, ``highpass = k``):
  it loses its ``k`` x ``k`` local mean, so it can remove noise and restore fine detail
  but cannot move a region's exposure or colour (a residual constant or linear across a
  window adds nothing there). A free residual can paint a colour cast,
  and a loss that rewards colourfulness (a cast raises it) finds that route.
- ``gain_denoise``: :func:`apply_gain_denoise`, 3 channels: the ``gain`` output (channel 0)
  followed by a denoising stage for the noise the gain lifts, in a luma/chroma space
  (Rec. 601 ``Y`` and the colour differences ``B - Y``, ``R - Y``). Two edge-aware
  smoothings of the gained image are made by guided filters (He et al., 2010): luma
  guided by itself in ``(2r+1)^2`` windows, chroma guided by the smoothed luma in
  ``(4r+1)^2`` windows (chroma noise is removed more strongly, and chroma edges follow
  luma edges). Their regularisation is noise-aware: ``eps = (2 * a * sigma)^2``, with
  ``sigma`` the input's noise level (Immerkaer's estimate, per image) and ``a`` the
  amplification the gain applied there (block-averaged), so a region is smoothed where
  its variation is of the order of the lifted noise and kept where it is an edge.
  Channels 1 and 2 give per-pixel blending weights between the gained image and those
  smoothings, ``w = strength * sigmoid(logit) * (1 - 1/a)``: zero where the gain did not
  brighten (``a <= 1``) and growing with it. The weights are averaged over the gain
  map's blocks and upsampled bilinearly, so they cannot pick single pixels (which would
  let them move a region's mean by choosing where the noise is high or low): the stage
  can only move each pixel towards a local, edge-aware average of its own luma and
  chroma, not repaint hue or exposure. ``strength = 0`` is the ``gain`` output exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attiqa_loss.measures import luminance

__all__ = ["OUTPUTS", "GAIN_PARAMS", "head_channels", "inward_clamp", "log_gain", "bounded_residual", "highpass_residual", "apply_curves", "exposure_curve",
           "guided_upsample", "guided_filter", "apply_gain", "apply_gain_denoise", "to_luma_chroma", "from_luma_chroma"]

#: The output formulations.
OUTPUTS = ("residual", "curves", "gain", "gain_denoise")
#: How the gain head's channel becomes a log-gain (:func:`apply_gain`).
GAIN_PARAMS = ("log", "tanh")


def head_channels(output: str, curve_iterations: int = 8, gain_residual: float = 0.0) -> int:
    """Channels the last convolution needs for ``output``."""
    if output == "residual":
        return 3
    if output == "curves":
        return 3 * curve_iterations
    if output == "gain":
        return 1 + (3 if gain_residual > 0 else 0)
    if output == "gain_denoise":
        return 3
    raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")


def bounded_residual(images: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Apply a residual in (-1, 1) so the result stays in [0, 1] without clamping.

    A positive ``r`` moves a pixel the fraction ``r`` of its way up to 1, a negative one
    the fraction ``|r|`` of its way down to 0: ``x + relu(r) * (1 - x) - relu(-r) * x``.
    Unlike a clamp this never cuts the gradient: ``d out / d r`` is ``1 - x`` or ``x``
    and ``d out / d x = 1 - |r|``.

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1].
        residual: same shape, values in (-1, 1) (e.g. after ``tanh``).

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    return images + F.relu(residual) * (1 - images) - F.relu(-residual) * images


def highpass_residual(images: torch.Tensor, residual: torch.Tensor, window: int) -> torch.Tensor:
    """Add ``residual`` minus its ``window`` x ``window`` local mean, kept in [0, 1].

    ``residual - box(residual)`` (reflect padding, so the border windows are full) is a
    high-pass: a residual that is constant, or changes linearly, across a window adds
    nothing there, and smooth (low-frequency) parts are attenuated quadratically in their
    frequency, while pixel-scale patterns pass almost intact. So it can remove noise and
    restore fine detail, but cannot move the exposure or colour of a region, nor the
    image's average colour (up to the border windows). The sum is brought into
    [0, 1] by a clamp whose gradient passes wherever it points back inside
    (:func:`inward_clamp`), so a pixel pushed past 0 or 1 still hears a loss that wants it
    back and nothing drives it further out.

    Args:
        images: ``(B, C, H, W)`` in [0, 1].
        residual: same shape (e.g. ``amplitude * tanh(logits)``).
        window: odd box size ``>= 3``.

    Returns:
        ``(B, C, H, W)`` in [0, 1].
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"the high-pass window must be an odd size >= 3, got {window}")
    radius = window // 2
    h, w = residual.shape[-2:]
    mode = "reflect" if radius < h and radius < w else "replicate"
    local_mean = F.avg_pool2d(F.pad(residual, (radius,) * 4, mode=mode), window, stride=1)
    return 0.5 + inward_clamp(images + (residual - local_mean) - 0.5, 0.5)


def apply_curves(images: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``n`` light-enhancement curves ``x <- x + a_k * x * (1 - x)``, ``k = 1..n``.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        alphas: ``(B, 3 * n, H, W)`` in [-1, 1] (after ``tanh``); channels ``3k..3k+2``
            are the R, G, B curve parameters of iteration ``k``.

    Returns:
        ``(B, 3, H, W)`` in [0, 1]: each curve maps [0, 1] onto itself, monotonically.
    """
    if alphas.shape[1] % 3:
        raise ValueError(f"curve parameters need a multiple of 3 channels, got {alphas.shape[1]}")
    x = images
    for a in alphas.split(3, dim=1):
        x = x + a * x * (1 - x)
    return x


def exposure_curve(images: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """``G * x / (1 + (G - 1) * x)``: slope ``G`` at black, 1 at white, [0, 1] onto itself
    for any ``G > 0`` (``G = 1`` is the identity). ``gain`` broadcasts against ``images``."""
    return gain * images / (1 + (gain - 1) * images)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_upsample(source_low: torch.Tensor, guide_low: torch.Tensor, guide: torch.Tensor, *, radius: int = 1,
                    eps: float = 1e-3) -> torch.Tensor:
    """Fast guided filter upsampling (He and Sun, 2015): fit ``source ~ A * guide + b`` in
    every ``(2r+1)^2`` window at low resolution, upsample ``A`` and ``b`` bilinearly and
    apply them to the full-resolution ``guide``.

    Args:
        source_low: ``(B, 1, h, w)`` the map to upsample.
        guide_low: ``(B, 1, h, w)`` the guide at that resolution.
        guide: ``(B, 1, H, W)`` the guide at full resolution.
        radius, eps: window radius (low-resolution pixels) and regularisation: a larger
            ``eps`` follows the guide's edges less.

    Returns:
        ``(B, 1, H, W)``: smooth where the guide is flat, following its edges where it has them.
    """
    a, b = _guided_fit(source_low, guide_low, radius, eps)
    size = guide.shape[-2:]
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return a * guide + b


def _guided_fit(source: torch.Tensor, guide: torch.Tensor, radius: int, eps) -> tuple:
    """The guided filter's linear fit ``source ~ A * guide + b`` in every ``(2r+1)^2``
    window, averaged over the windows covering each pixel: ``(A, b)``, each the shape of
    ``source`` (broadcast with ``guide``)."""
    mean_i, mean_p = _box(guide, radius), _box(source, radius)
    cov = _box(guide * source, radius) - mean_i * mean_p
    var = _box(guide * guide, radius) - mean_i * mean_i
    a = cov / (var.clamp_min(0) + eps)
    b = mean_p - a * mean_i
    return _box(a, radius), _box(b, radius)


class _InwardClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # descent moves x along -grad: past the upper cap keep only grad > 0 (x goes down),
        # past the lower cap only grad < 0 (x goes up); inside, everything
        keep = ((x <= ctx.bound) | (grad > 0)) & ((x >= -ctx.bound) | (grad < 0))
        return grad * keep, None


def inward_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``x.clamp(-bound, bound)`` whose gradient passes wherever it points back inside.

    Inside the bound the gradient is the identity's; past it, a gradient that would move
    ``x`` back towards the bound (under gradient descent) passes unchanged and one that
    would move it further out is zeroed. So a value pushed past the cap is never stuck
    there (unlike a plain clamp or ``tanh``) and, unlike a straight-through clamp, never
    driven further out by a loss that wants more than the cap allows: the logits of a run
    that keeps asking for more gain stay near the cap instead of drifting without bound.
    Shape-preserving."""
    return _InwardClamp.apply(x, float(bound))


def log_gain(logit: torch.Tensor, gain_max: float, gain_param: str = "log") -> torch.Tensor:
    """The log-gain of the head's gain channel, within ``+-log(gain_max)``.

    ``"log"``: the logit itself, capped by :func:`inward_clamp` (slope 1 inside the cap and
    for any gradient that points back inside); ``"tanh"``: ``log(gain_max) * tanh(logit)``
    (slope ``log(gain_max)`` at 0, vanishing near the bound). Shape-preserving."""
    bound = math.log(gain_max)
    if gain_param == "log":
        return inward_clamp(logit, bound)
    if gain_param == "tanh":
        return bound * torch.tanh(logit)
    raise ValueError(f"gain_param must be one of {list(GAIN_PARAMS)}, got {gain_param!r}")


def _gain_factor(images: torch.Tensor, logit: torch.Tensor, *, scale: int, gain_max: float,
                 gain_param: str) -> torch.Tensor:
    """The factor ``f(v) / v`` of :func:`apply_gain` by which every channel of a pixel is
    multiplied: ``(B, 3, H, W)`` images and ``(B, 1, H, W)`` logits -> ``(B, 1, H, W)``
    in ``[1 / gain_max, gain_max]`` (the amplification the gain applies there)."""
    guide = luminance(images)  # (B, 1, H, W)
    if scale > 1:
        h, w = images.shape[-2:]
        size = (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))
        logit_low = F.adaptive_avg_pool2d(logit, size)
        if gain_param == "log":
            # capped before the upsampling: a guided filter fitted to unbounded logits
            # extrapolates them along the guide's edges to both caps (a bang-bang map)
            logit_low = inward_clamp(logit_low, math.log(gain_max))
        guide_low = F.adaptive_avg_pool2d(guide, size)
        logit = guided_upsample(logit_low, guide_low, guide)
    gain = torch.exp(log_gain(logit, gain_max, gain_param))
    value = images.amax(dim=1, keepdim=True)
    return gain / (1 + (gain - 1) * value)  # = f(v) / v, also at v = 0


def apply_gain(images: torch.Tensor, head: torch.Tensor, *, scale: int = 8, gain_max: float = 16.0,
               residual: float = 0.0, gain_param: str = "log", highpass: int = 0) -> torch.Tensor:
    """The ``gain`` output (see the module docstring).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        head: ``(B, 1 or 4, H, W)``: channel 0 the log-gain logits; channels 1-3 a
            residual used when ``residual > 0``.
        scale: block size of the low-resolution gain map (1 = full resolution).
        gain_max: the gain lies in ``[1 / gain_max, gain_max]``.
        gain_param: ``"log"`` or ``"tanh"``: how channel 0 becomes the log-gain (:func:`log_gain`).
        residual: amplitude of an extra :func:`bounded_residual` (``residual * tanh``) for
            what a gain cannot do (noise); 0 = none.
        highpass: 0: the residual is free (:func:`bounded_residual`); an odd ``k >= 3``:
            it loses its ``k`` x ``k`` local mean (:func:`highpass_residual`), so it cannot
            change a region's exposure or colour.

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    head = head.float()
    out = images * _gain_factor(images, head[:, :1], scale=scale, gain_max=gain_max, gain_param=gain_param)
    if residual > 0:
        r = residual * torch.tanh(head[:, 1:4])
        out = highpass_residual(out, r, highpass) if highpass else bounded_residual(out, r)
    return out


#: Rec. 601 luma weights (:func:`attiqa_loss.measures.luminance`), used by the luma/chroma split.
_LUMA = (0.299, 0.587, 0.114)


def to_luma_chroma(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB -> ``(B, 3, H, W)``: Rec. 601 luma ``Y`` and the colour
    differences ``B - Y`` and ``R - Y`` (YCbCr without its scale factors and offsets).
    Linear and invertible (:func:`from_luma_chroma`): a change of ``Y`` alone moves the
    three channels equally, a change of the colour differences alone keeps ``Y``."""
    y = _LUMA[0] * rgb[:, 0:1] + _LUMA[1] * rgb[:, 1:2] + _LUMA[2] * rgb[:, 2:3]
    return torch.cat([y, rgb[:, 2:3] - y, rgb[:, 0:1] - y], dim=1)


def from_luma_chroma(ycc: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_luma_chroma`: ``(B, 3, H, W)`` (Y, B - Y, R - Y) -> RGB.
    Linear, so it also turns a change of (Y, B - Y, R - Y) into the change of RGB."""
    y, cb, cr = ycc[:, 0:1], ycc[:, 1:2], ycc[:, 2:3]
    g = y - (_LUMA[0] * cr + _LUMA[2] * cb) / _LUMA[1]
    return torch.cat([y + cr, g, y + cb], dim=1)


def guided_filter(source: torch.Tensor, guide: torch.Tensor, radius: int, eps) -> torch.Tensor:
    """Guided filter (He, Sun and Tang, ECCV 2010) at full resolution: in every
    ``(2r+1)^2`` window fit ``source ~ A * guide + b`` (ridge-regularised by ``eps``),
    average the fits covering a pixel and apply them to its guide value. Edge-aware
    smoothing: where the guide varies much more than ``sqrt(eps)`` the output follows it,
    where it varies less the output is the local mean. Box filters without the padding
    counted, so border windows are the pixels they cover. Differentiable.

    Args:
        source: ``(B, C, H, W)``.
        guide: ``(B, 1, H, W)`` (or ``(B, C, H, W)``: one guide per channel).
        radius: window radius in pixels, ``>= 1``.
        eps: a float or a tensor broadcasting to ``(B, 1, H, W)`` (> 0).

    Returns:
        ``(B, C, H, W)``.
    """
    a, b = _guided_fit(source, guide, radius, eps)
    return a * guide + b


#: ``eps = (NOISE_MARGIN * a * sigma)^2``: variation below about twice the lifted noise is smoothed.
NOISE_MARGIN = 2.0


def _input_noise(images: torch.Tensor) -> torch.Tensor:
    """Immerkaer's noise estimate of each input image's luminance, ``(B, 1, 1, 1)``
    (:func:`attiqa_loss.measures.noise_sigma`; 0 for images under 3 x 3). No gradient:
    it sets how strongly to smooth, not what the image is."""
    from attiqa_loss.measures import noise_sigma

    if min(images.shape[-2:]) < 3:
        return images.new_zeros(images.shape[0], 1, 1, 1, dtype=torch.float32)
    with torch.no_grad(), torch.autocast(images.device.type, enabled=False):  # float32 under bf16 autocast too
        return noise_sigma(images.detach().float()).view(-1, 1, 1, 1)


def apply_gain_denoise(images: torch.Tensor, head: torch.Tensor, *, scale: int = 8, gain_max: float = 16.0,
                       gain_param: str = "log", strength: float = 1.0, radius: int = 2,
                       return_weights: bool = False):
    """The ``gain_denoise`` output (see the module docstring): :func:`apply_gain`, then
    noise-aware luma/chroma smoothing blended in by weights that grow with the gain.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        head: ``(B, 3, H, W)``: channel 0 the log-gain logits (as :func:`apply_gain`),
            channels 1 and 2 the luma and chroma denoising logits.
        scale, gain_max, gain_param: as :func:`apply_gain`; ``scale`` is also the block
            size over which the denoising weights are averaged.
        strength: the largest blending weight, in [0, 1]; 0 returns the ``gain`` output
            exactly.
        radius: luma guided-filter radius ``r >= 1`` (``(2r+1)^2`` windows); chroma uses ``2r``.
        return_weights: also return the blending weights ``(B, 2, H, W)`` (luma, chroma)
            in ``[0, strength)``.

    Returns:
        ``(B, 3, H, W)`` in [0, 1] (with ``return_weights``: ``(out, weights)``).
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"the denoising strength must be in [0, 1], got {strength}")
    if radius < 1:
        raise ValueError(f"the denoising radius must be >= 1, got {radius}")
    head = head.float()
    if head.shape[1] != 3:
        raise ValueError(f"gain_denoise needs 3 head channels (gain, luma, chroma), got {head.shape[1]}")
    factor = _gain_factor(images, head[:, :1], scale=scale, gain_max=gain_max, gain_param=gain_param)
    gained = images * factor
    h, w = images.shape[-2:]
    if strength == 0:
        return (gained, gained.new_zeros(gained.shape[0], 2, h, w)) if return_weights else gained
    # Block-averaged weights and amplification: smooth maps, blind to single noisy pixels.
    size = (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))
    amp = F.adaptive_avg_pool2d(factor, size)  # (B, 1, h', w')
    lifted = (1 - 1 / amp).clamp_min(0)  # 0 where the gain did not brighten, -> 1 as it grows
    weights = strength * torch.sigmoid(F.adaptive_avg_pool2d(head[:, 1:3], size)) * lifted
    weights = F.interpolate(weights, size=(h, w), mode="bilinear", align_corners=False)
    amp = F.interpolate(amp, size=(h, w), mode="bilinear", align_corners=False)
    eps = (NOISE_MARGIN * amp * _input_noise(images).to(amp.dtype)) ** 2 + 1e-8  # (B, 1, H, W)
    ycc = to_luma_chroma(gained)
    luma, chroma = ycc[:, :1], ycc[:, 1:]
    luma_smooth = guided_filter(luma, luma, radius, eps)
    chroma_smooth = guided_filter(chroma, luma_smooth, 2 * radius, eps)
    delta = torch.cat([weights[:, :1] * (luma_smooth - luma), weights[:, 1:2] * (chroma_smooth - chroma)], dim=1)
    out = 0.5 + inward_clamp(gained + from_luma_chroma(delta) - 0.5, 0.5)
    return (out, weights) if return_weights else out
