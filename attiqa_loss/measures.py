"""Classic no-reference image measures: judges that no network was trained to please.

Every measure takes ``(B, 3, H, W)`` float RGB in [0, 1] (gamma-encoded sRGB, as decoded
from a file) and returns ``(B,)`` on the input's device. Half-precision input is computed
in float32; the simple measures keep float32/float64 input's dtype, :func:`clipped_fraction`
and :func:`niqe` return float64.

- :func:`laplacian_variance`: luminance^2 on the [0, 1] scale; higher = sharper (or noisier)
- :func:`rms_contrast`: luminance, [0, 1] scale; higher = more contrast
- :func:`mean_luminance`: luminance in [0, 1]; higher = brighter
- :func:`colourfulness`: opponent-colour units, [0, 1] scale; higher = more colourful
- :func:`noise_sigma`: luminance noise std, [0, 1] scale; higher = noisier (worse)
- :func:`clipped_fraction`: fraction of pixels in [0, 1]; higher = more clipped (worse)
- :func:`niqe`: unitless distance >= 0; higher = less natural (worse), lower = better

The first five are the handcrafted baselines of :mod:`pretrain.handcrafted` (which uses
them from here). See ``docs/measures.md`` for the formulas and references.

NIQE (Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013) is written from the paper; its
pristine model (:class:`NiqeModel`) is fitted on this project's own photos
(``benchmarks/fit_niqe.py``) and ships as ``attiqa_loss/weights/niqe_pristine.safetensors``,
so its absolute values differ from the published MATLAB model's: compare ranks.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "luminance",
    "laplacian_variance",
    "rms_contrast",
    "mean_luminance",
    "opponent_channels",
    "colourfulness",
    "noise_sigma",
    "clipped_fraction",
    "mscn",
    "ggd_fit",
    "aggd_fit",
    "niqe_features",
    "niqe_distance",
    "NiqeModel",
    "fit_niqe",
    "niqe",
    "NIQE_FEATURES",
    "NIQE_FORMAT",
    "NIQE_FORMAT_VERSION",
    "default_niqe_path",
]

PathLike = Union[str, os.PathLike]


def _check_rgb(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, 3, H, W) RGB tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got dtype {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# ----------------------------------------------------------------------------- simple measures


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


# ----------------------------------------------------------------------------- NIQE

#: Features per patch: 18 per scale, 2 scales.
NIQE_FEATURES = 36
NIQE_FORMAT = "attiqa-niqe"
NIQE_FORMAT_VERSION = 1
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


@dataclass
class NiqeModel:
    """A NIQE pristine model: the multivariate Gaussian of pristine patch features.

    Attributes:
        mean: ``(36,)`` float64 mean of the selected pristine patches' features.
        cov: ``(36, 36)`` float64 covariance (unbiased) of the same.
        patch: patch side P in pixels (even; scale 2 uses P / 2).
        metadata: JSON-able facts about the fit (``sharpness_threshold``, ``n_images``,
            ``n_patches``, ``command``, ...).
    """

    mean: torch.Tensor
    cov: torch.Tensor
    patch: int = 96
    metadata: Dict[str, Any] = field(default_factory=dict)

    def save(self, path: PathLike) -> Path:
        """Write the model as safetensors (tensors ``mean`` and ``cov`` in float64; metadata
        ``format``, ``format_version``, ``patch`` and ``info`` as JSON), atomically."""
        from safetensors.torch import save_file

        from .io import atomic_path

        _check_patch(self.patch)
        cov = self.cov.detach().to("cpu", torch.float64)
        tensors = {
            "mean": self.mean.detach().to("cpu", torch.float64).contiguous().clone(),
            "cov": ((cov + cov.T) / 2).contiguous(),
        }
        _check_model_tensors("NiqeModel.save", tensors)
        metadata = {
            "format": NIQE_FORMAT,
            "format_version": str(NIQE_FORMAT_VERSION),
            "patch": str(self.patch),
            "info": json.dumps(self.metadata, sort_keys=True, default=str),
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "NiqeModel":
        """Read a model written by :meth:`save`, strictly.

        Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` naming the
        file and the rule broken when it is not readable safetensors, another format or
        format version, its metadata is missing or malformed (``patch`` an even integer >= 8,
        ``info`` a JSON object), its tensors are not exactly ``mean (36,)`` and
        ``cov (36, 36)`` of floating point, or hold non-finite values, or ``cov`` is not
        symmetric with a non-negative diagonal."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NIQE model not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = dict(f.metadata() or {})
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
        if raw.get("format") != NIQE_FORMAT:
            raise ValueError(f"{path} is not a NIQE model (metadata format={raw.get('format')!r}, "
                             f"expected {NIQE_FORMAT!r})")
        if raw.get("format_version") != str(NIQE_FORMAT_VERSION):
            raise ValueError(f"{path} has NIQE format_version={raw.get('format_version')!r}; "
                             f"this attiqa reads format_version={NIQE_FORMAT_VERSION}")
        try:
            patch = int(raw["patch"])
            _check_patch(patch)
            info = json.loads(raw["info"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path} has missing or malformed metadata: {exc}") from exc
        if not isinstance(info, dict):
            raise ValueError(f"{path}: metadata info must be a JSON object, got {type(info).__name__}")
        _check_model_tensors(str(path), tensors)
        return cls(mean=tensors["mean"].to(torch.float64), cov=tensors["cov"].to(torch.float64),
                   patch=patch, metadata=info)


def _check_model_tensors(where: str, tensors: Dict[str, torch.Tensor]) -> None:
    if set(tensors) != {"mean", "cov"}:
        raise ValueError(f"{where}: a NIQE model holds exactly the tensors ['cov', 'mean'], got {sorted(tensors)}")
    expected = {"mean": (NIQE_FEATURES,), "cov": (NIQE_FEATURES, NIQE_FEATURES)}
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point():
            raise ValueError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected floating point")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: tensor {name!r} holds non-finite values (NaN or inf)")
    cov = tensors["cov"].to(torch.float64)
    if float((cov - cov.T).abs().max()) > 1e-9 * max(float(cov.abs().max()), 1e-300):
        raise ValueError(f"{where}: tensor 'cov' is not symmetric")
    if bool((cov.diagonal() < 0).any()):
        raise ValueError(f"{where}: tensor 'cov' has a negative variance on its diagonal")


def fit_niqe(images: Iterable[torch.Tensor], patch: int = 96, sharpness_threshold: float = 0.75) -> NiqeModel:
    """Fit a NIQE pristine model on pristine photos.

    ``images``: an iterable of ``(3, H, W)`` or ``(B, 3, H, W)`` RGB tensors in [0, 1]
    (sizes may differ between items; each side at least ``2 * patch``). From each image,
    the patches whose sharpness (:func:`niqe_features`) exceeds ``sharpness_threshold``
    times the image's largest patch sharpness are kept (the paper's selection of the
    sharp, informative patches; patches with non-finite features are dropped too). The
    model is the mean and unbiased covariance of the kept patches' 36 features;
    ``metadata`` records ``n_images``, ``n_patches`` (kept), ``n_patches_seen``, ``patch``
    and ``sharpness_threshold``. Raises ``ValueError`` when fewer than 2 patches are kept.
    """
    patch = _check_patch(patch)
    if not 0 <= sharpness_threshold < 1:
        raise ValueError(f"sharpness_threshold must be in [0, 1), got {sharpness_threshold}")
    kept, n_images, n_seen = [], 0, 0
    for item in images:
        x = item.unsqueeze(0) if item.dim() == 3 else item
        feats, sharp = niqe_features(x, patch)
        for f, s in zip(feats.cpu(), sharp.cpu()):
            n_images += 1
            n_seen += s.numel()
            keep = (s > sharpness_threshold * s.max()) & torch.isfinite(f).all(dim=1)
            kept.append(f[keep])
    feats = torch.cat(kept) if kept else torch.zeros(0, NIQE_FEATURES, dtype=torch.float64)
    if feats.shape[0] < 2:
        raise ValueError(f"fit_niqe kept {feats.shape[0]} patch(es) from {n_images} image(s); "
                         f"a model needs at least 2 (more images, or a lower sharpness_threshold)")
    cov = torch.cov(feats.T)
    meta = {"n_images": n_images, "n_patches": int(feats.shape[0]), "n_patches_seen": n_seen, "patch": patch,
            "sharpness_threshold": sharpness_threshold}
    return NiqeModel(mean=feats.mean(0), cov=(cov + cov.T) / 2, patch=patch, metadata=meta)


def default_niqe_path() -> Path:
    """The shipped pristine model, ``attiqa_loss/weights/niqe_pristine.safetensors``."""
    return Path(__file__).resolve().parent / "weights" / "niqe_pristine.safetensors"


@functools.lru_cache(maxsize=1)
def _default_model() -> NiqeModel:
    return NiqeModel.load(default_niqe_path())


@torch.no_grad()
def niqe(x: torch.Tensor, model: Optional[NiqeModel] = None) -> torch.Tensor:
    """NIQE score of each image: its distance from a pristine model.

    ``x``: ``(B, 3, H, W)`` RGB in [0, 1], each side at least ``2 * model.patch`` (192 px
    for the shipped model). Every patch of the image (no sharpness selection) gives 36
    features (:func:`niqe_features`); their mean and unbiased covariance form the image's
    Gaussian, and the score is :func:`niqe_distance` from the model's:
    ``sqrt((nu1 - nu2)^T ((S1 + S2) / 2)^+ (nu1 - nu2))``. Perfectly flat patches (NaN
    features) are left out; an image with none left scores NaN; a single patch has zero
    covariance. ``model=None`` uses the shipped model (loaded once, cached).

    Returns ``(B,)`` float64 on ``x``'s device, unitless, >= 0. Lower = better (closer to
    the statistics of natural, undistorted photos); blur, noise and compression raise it.
    """
    model = _default_model() if model is None else model
    feats, _ = niqe_features(x, model.patch)
    mean2, cov2 = model.mean.to(feats.device, torch.float64), model.cov.to(feats.device, torch.float64)
    scores = []
    for f in feats:
        f = f[torch.isfinite(f).all(dim=1)]
        if f.shape[0] == 0:
            scores.append(torch.tensor(float("nan"), dtype=torch.float64, device=feats.device))
            continue
        cov1 = torch.cov(f.T) if f.shape[0] > 1 else torch.zeros_like(cov2)
        scores.append(niqe_distance(f.mean(0), cov1, mean2, cov2))
    return torch.stack(scores)
