"""NIQE's pristine model and score: :class:`NiqeModel` (the Gaussian of pristine patch
features, saved and loaded as strict safetensors), :func:`fit_niqe` (fitted on pristine
photos), :func:`default_niqe_path` (the shipped model) and :func:`niqe` (an image's
distance from the model; lower = better)."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

import torch

from .niqe_stats import NIQE_FEATURES, _check_patch, niqe_distance, niqe_features

NIQE_FORMAT = "attiqa-niqe"
NIQE_FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


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
        from ..weights_file import write_weights_file

        _check_patch(self.patch)
        cov = self.cov.detach().to("cpu", torch.float64)
        tensors = {
            "mean": self.mean.detach().to("cpu", torch.float64).contiguous().clone(),
            "cov": ((cov + cov.T) / 2).contiguous(),
        }
        _check_model_tensors("NiqeModel.save", tensors)
        metadata = {"patch": str(self.patch), "info": json.dumps(self.metadata, sort_keys=True, default=str)}
        return write_weights_file(path, tensors, format=NIQE_FORMAT, version=NIQE_FORMAT_VERSION, metadata=metadata)

    @classmethod
    def load(cls, path: PathLike) -> "NiqeModel":
        """Read a model written by :meth:`save`, strictly.

        Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` naming the
        file and the rule broken when it is not readable safetensors, another format or
        format version, its metadata is missing or malformed (``patch`` an even integer >= 8,
        ``info`` a JSON object), its tensors are not exactly ``mean (36,)`` and
        ``cov (36, 36)`` of floating point, or hold non-finite values, or ``cov`` is not
        symmetric with a non-negative diagonal."""
        from ..weights_file import read_weights_file

        tensors, raw = read_weights_file(path, format=NIQE_FORMAT, version=NIQE_FORMAT_VERSION,
                                         what="a NIQE model", noun="NIQE model")
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
    return Path(__file__).resolve().parent.parent / "weights" / "niqe_pristine.safetensors"


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
