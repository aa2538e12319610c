"""Classic no-reference image measures: judges that no network was trained to please.

Every measure takes ``(B, 3, H, W)`` float RGB in [0, 1] (gamma-encoded sRGB, as decoded
from a file) and returns ``(B,)`` on the input's device. Half-precision input is computed
in float32; the simple measures keep float32/float64 input's dtype, :func:`clipped_fraction`
and :func:`niqe` return float64.

- :func:`laplacian_variance`: luminance^2 on the [0, 1] scale; higher = sharper (or noisier)
- :func:`rms_contrast`: luminance, [0, 1] scale; higher = more contrast
- :func:`mean_luminance`: luminance in [0, 1]; higher = brighter
- :func:`colourfulness`: opponent-colour units, [0, 1] scale; higher = more colourful
- :func:`colour_cast`: the average colour's distance from grey, same units (its cast term)
- :func:`noise_sigma`: luminance noise std, [0, 1] scale; higher = noisier (worse)
- :func:`clipped_fraction`: fraction of pixels in [0, 1]; higher = more clipped (worse)
- :func:`niqe`: unitless distance >= 0; higher = less natural (worse), lower = better

The first five are the handcrafted baselines of
:mod:`pretrain.diagnostics.handcrafted` (which uses them from here). See
``docs/measures.md`` for the formulas and references.

NIQE (Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE Signal Processing Letters 20(3), 2013) is written from the paper; its
pristine model (:class:`NiqeModel`) is fitted on this project's own photos
(``benchmarks/fit_niqe.py``) and ships as ``attiqa_loss/weights/niqe_pristine.safetensors``,
so its absolute values differ from the published MATLAB model's: compare ranks.

The package re-exports its submodules' API, so ``from attiqa_loss.measures import X`` is
the import to use: :mod:`~attiqa_loss.measures.simple` (the simple measures),
:mod:`~attiqa_loss.measures.niqe_stats` (MSCN, GGD/AGGD fits, NIQE features and distance)
and :mod:`~attiqa_loss.measures.niqe_model` (the pristine model, its fit and the score).
"""

from __future__ import annotations

from .niqe_model import (  # noqa: F401  (PathLike, _default_model: as before the split)
    NIQE_FORMAT,
    NIQE_FORMAT_VERSION,
    NiqeModel,
    PathLike,
    _default_model,
    default_niqe_path,
    fit_niqe,
    niqe,
)
from .niqe_stats import NIQE_FEATURES, aggd_fit, ggd_fit, mscn, niqe_distance, niqe_features
from .simple import (
    clipped_fraction,
    colour_cast,
    colourfulness,
    laplacian_variance,
    luminance,
    mean_luminance,
    noise_sigma,
    opponent_channels,
    rms_contrast,
)

__all__ = [
    "luminance",
    "laplacian_variance",
    "rms_contrast",
    "mean_luminance",
    "opponent_channels",
    "colourfulness",
    "colour_cast",
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
