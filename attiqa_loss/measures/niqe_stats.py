"""NIQE's natural scene statistics: MSCN coefficients (:func:`mscn`), generalised Gaussian
fits by moment matching (:func:`ggd_fit`, :func:`aggd_fit`), the 36 patch features
(:func:`niqe_features`) and the distance between two Gaussians of them
(:func:`niqe_distance`), written from Mittal, Soundararajan and Bovik (IEEE Signal
Processing Letters 20(3), 2013)."""

from __future__ import annotations

import functools
from typing import Tuple

import torch
import torch.nn.functional as F

from .simple import _check_rgb, luminance

#: Features per patch: 18 per scale, 2 scales.
NIQE_FEATURES = 36
#: MSCN window: 7 x 7 Gaussian of standard deviation 7/6, and the stabilising constant C
#: (on the 0-255 scale the paper uses).
_WINDOW, _WINDOW_SIGMA, _C = 7, 7 / 6, 1.0
#: Shape grid of the moment-matching lookup.
_SHAPE_MIN, _SHAPE_MAX, _SHAPE_STEP = 0.2, 10.0, 0.001


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.arange(_WINDOW, dtype=torch.float64) - (_WINDOW - 1) / 2
    g = torch.exp(-(r**2) / (2 * _WINDOW_SIGMA**2))
    w = torch.outer(g, g)
    return (w / w.sum()).to(dtype=dtype, device=device).view(1, 1, _WINDOW, _WINDOW)


def mscn(y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean-subtracted contrast-normalised (MSCN) coefficients and the local deviation.

    ``y``: ``(B, 1, H, W)`` luminance on the 0-255 scale. With the 7 x 7 Gaussian window
    ``w`` (standard deviation 7/6, normalised to sum 1; borders replicated):
    ``mu = w * y``, ``sigma = sqrt(|w * y^2 - mu^2|)`` (the local weighted standard
    deviation) and ``mscn = (y - mu) / (sigma + 1)``. Where the whole 7 x 7 window is
    constant, ``mscn`` and ``sigma`` are set to exactly 0 (the formula's value, which
    rounding would otherwise turn into noise of about 1e-14). Returns ``(mscn, sigma)``,
    both ``(B, 1, H, W)`` in ``y``'s dtype (use float64).
    """
    w = _gaussian_window(y.dtype, y.device)
    pad = (_WINDOW // 2,) * 4
    padded = F.pad(y, pad, mode="replicate")
    mu = F.conv2d(padded, w)
    sq = F.conv2d(F.pad(y * y, pad, mode="replicate"), w)
    sigma = (sq - mu * mu).abs().sqrt()
    flat = F.max_pool2d(padded, _WINDOW, stride=1) == -F.max_pool2d(-padded, _WINDOW, stride=1)
    sigma = sigma.masked_fill(flat, 0.0)
    return ((y - mu) / (sigma + _C)).masked_fill(flat, 0.0), sigma


@functools.lru_cache(maxsize=None)
def _shape_grid_cpu() -> Tuple[torch.Tensor, torch.Tensor]:
    n = int(round((_SHAPE_MAX - _SHAPE_MIN) / _SHAPE_STEP)) + 1
    shape = _SHAPE_MIN + _SHAPE_STEP * torch.arange(n, dtype=torch.float64)
    rho = torch.exp(2 * torch.lgamma(2 / shape) - torch.lgamma(1 / shape) - torch.lgamma(3 / shape))
    if not bool((rho[1:] > rho[:-1]).all()):  # pragma: no cover - a property of the gamma function
        raise AssertionError("rho(shape) is not increasing on the lookup grid")
    return shape, rho


def _shape_lookup(ratio: torch.Tensor) -> torch.Tensor:
    """Shape ``a`` on the grid whose ``rho(a) = G(2/a)^2 / (G(1/a) G(3/a))`` is nearest to
    ``ratio`` (``rho`` increases with ``a``, so the lookup is a binary search). Ratios
    outside ``rho``'s range on the grid give the grid's end points; NaN stays NaN."""
    shape, rho = (t.to(ratio.device) for t in _shape_grid_cpu())
    r = ratio.to(torch.float64).contiguous()
    hi = torch.searchsorted(rho, r).clamp(1, rho.numel() - 1)
    lo = hi - 1
    pick = torch.where((r - rho[lo]).abs() <= (rho[hi] - r).abs(), lo, hi)
    out = shape[pick]
    return torch.where(torch.isnan(r), torch.full_like(out, float("nan")), out)


def ggd_fit(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean generalised Gaussian fit by moment matching over the last dimension.

    The GGD ``f(x) = a / (2 b G(1/a)) exp(-(|x| / b)^a)`` has ``sigma^2 = E[x^2] =
    b^2 G(3/a) / G(1/a)`` and ``E[|x|]^2 / E[x^2] = rho(a) = G(2/a)^2 / (G(1/a) G(3/a))``
    (``G`` the gamma function, computed as ``exp(lgamma)``). The sample ratio
    ``mean(|x|)^2 / mean(x^2)`` is matched with ``rho`` on the grid ``a = 0.2, 0.201, ...,
    10`` (nearest value); ``rho`` is 1/2 for the Laplacian (a = 1) and 2/pi for the
    Gaussian (a = 2). Returns ``(shape a, variance sigma^2 = mean(x^2))``, float64, the
    input's shape without its last dimension. All-zero samples give NaN shape.
    """
    x = x.to(torch.float64)
    var = (x * x).mean(dim=-1)
    ratio = x.abs().mean(dim=-1) ** 2 / var  # 0/0 = NaN for all-zero samples
    return _shape_lookup(ratio), var


def aggd_fit(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric generalised Gaussian fit by moment matching (Lasmar, Stitou and Berthoumieu,
    ICIP 2009) over the last dimension.

    Left and right variances ``sl^2 = mean(x^2 | x < 0)``, ``sr^2 = mean(x^2 | x > 0)``
    (0 where a side has no sample); ``g = sl / sr``, ``r = mean(|x|)^2 / mean(x^2)``,
    ``R = r (g^3 + 1)(g + 1) / (g^2 + 1)^2``; the shape ``v`` solves ``rho(v) = R`` by the
    same grid lookup as :func:`ggd_fit` (``R`` is unchanged when ``g`` becomes ``1/g``, so
    ``g = min/max`` is used and a one-sided sample gives ``R = r``); the mean is
    ``eta = (br - bl) G(2/v) / G(1/v)`` with ``bl = sl sqrt(G(1/v) / G(3/v))`` and ``br``
    likewise. Returns ``(shape v, mean eta, sl^2, sr^2)``, float64; all-zero samples give NaN.
    """
    x = x.to(torch.float64)
    neg, pos = x < 0, x > 0
    x2 = x * x
    left = (x2 * neg).sum(-1) / neg.sum(-1).clamp(min=1)
    right = (x2 * pos).sum(-1) / pos.sum(-1).clamp(min=1)
    sl, sr = left.sqrt(), right.sqrt()
    g = torch.minimum(sl, sr) / torch.maximum(sl, sr)  # 0/0 = NaN for all-zero samples
    r = x.abs().mean(-1) ** 2 / x2.mean(-1)
    big_r = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    v = _shape_lookup(big_r)
    lg1, lg2, lg3 = torch.lgamma(1 / v), torch.lgamma(2 / v), torch.lgamma(3 / v)
    scale = torch.exp(0.5 * (lg1 - lg3))
    eta = (sr - sl) * scale * torch.exp(lg2 - lg1)
    return v, eta, left, right


def _patches(m: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, 1, nh p, nw p)`` -> ``(B, nh nw, p, p)``, patches in row-major order."""
    b, _, h, w = m.shape
    nh, nw = h // p, w // p
    return m.reshape(b, nh, p, nw, p).permute(0, 1, 3, 2, 4).reshape(b, nh * nw, p, p)


def _scale_features(m: torch.Tensor, p: int) -> torch.Tensor:
    """18 features of every ``p x p`` patch of an MSCN map -> ``(B, N, 18)``."""
    q = _patches(m, p)
    feats = list(ggd_fit(q.flatten(-2)))
    products = (
        q[..., :, :-1] * q[..., :, 1:],  # horizontal neighbours
        q[..., :-1, :] * q[..., 1:, :],  # vertical
        q[..., :-1, :-1] * q[..., 1:, 1:],  # main diagonal
        q[..., :-1, 1:] * q[..., 1:, :-1],  # anti-diagonal
    )
    for prod in products:
        feats.extend(aggd_fit(prod.flatten(-2)))
    return torch.stack(feats, dim=-1)


def _min_side(patch: int) -> int:
    return 2 * patch


def _check_patch(patch: int) -> int:
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 8 or patch % 2:
        raise ValueError(f"NIQE patch size must be an even integer >= 8, got {patch!r}")
    return patch


def niqe_features(x: torch.Tensor, patch: int = 96) -> Tuple[torch.Tensor, torch.Tensor]:
    """NIQE's patch features and patch sharpness.

    ``x``: ``(B, 3, H, W)`` RGB in [0, 1]; H and W must be at least ``2 * patch``. The
    luminance (:func:`luminance`, Rec. 601 luma of the gamma-encoded RGB, scaled to 0-255
    as in the paper's grayscale images) is cropped to whole patches (top-left kept,
    ``floor(H / P) * P`` by ``floor(W / P) * P``). Scale 1: its MSCN map (:func:`mscn`);
    scale 2: the MSCN map of the cropped luminance after averaging 2 x 2 blocks (a low-pass
    filter and downsampling by 2), with ``P / 2`` patches covering the same regions. Per
    patch and scale, 18 features: the GGD shape and variance of the MSCN coefficients
    (:func:`ggd_fit`) and, for the products of horizontally, vertically, diagonally and
    anti-diagonally adjacent coefficients within the patch, the AGGD shape, mean, left and
    right variances (:func:`aggd_fit`).

    Returns ``(features (B, N, 36) float64, sharpness (B, N) float64)`` with ``N`` patches
    in row-major order; sharpness is the mean local deviation ``sigma`` of the scale-1
    MSCN over the patch (0-255 luminance units). Perfectly flat patches have NaN features.
    """
    x = _check_rgb(x)
    patch = _check_patch(patch)
    h, w = x.shape[-2:]
    if min(h, w) < _min_side(patch):
        raise ValueError(
            f"NIQE needs images of at least {_min_side(patch)} x {_min_side(patch)} pixels "
            f"(2 patches of {patch} per side), got {h} x {w}"
        )
    y = luminance(x.to(torch.float64)) * 255.0
    y = y[..., : (h // patch) * patch, : (w // patch) * patch]
    m1, sigma = mscn(y)
    m2, _ = mscn(F.avg_pool2d(y, 2))
    feats = torch.cat([_scale_features(m1, patch), _scale_features(m2, patch // 2)], dim=-1)
    sharpness = _patches(sigma, patch).flatten(-2).mean(-1)
    return feats, sharpness


def niqe_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """The NIQE distance between two multivariate Gaussians:
    ``sqrt((m1 - m2)^T ((S1 + S2) / 2)^+ (m1 - m2))`` with ``^+`` the Moore-Penrose
    pseudo-inverse. ``(D,)`` means and ``(D, D)`` covariances -> a float64 scalar tensor
    (0 when the means agree; symmetric in the two Gaussians)."""
    d = (mean1.to(torch.float64) - mean2.to(torch.float64)).reshape(-1, 1)
    s = (cov1.to(torch.float64) + cov2.to(torch.float64)) / 2
    s = (s + s.T) / 2
    q = (d.T @ torch.linalg.pinv(s, hermitian=True) @ d).reshape(())
    return q.clamp(min=0).sqrt()
