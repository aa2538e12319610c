"""The MOS quality head and its file format (ATTIQA stage 4, docs/method.md, section 7).

The data (a ``path,mos`` CSV, the split protocol) is :mod:`pretrain.mos.data`.

- :class:`MosModel`: a pretrained :class:`~attiqa_loss.AttiqaNet` backbone
  (``forward_features``) with a linear quality head, predicting MOS in the CSV's units
  (higher = better quality when the dataset's MOS is higher-is-better).
- :func:`fit_ridge`: the closed-form linear probe (ridge, penalty chosen by k-fold CV).
- :func:`save_mos_model` / :func:`load_mos_model`: one self-contained safetensors file
  (backbone + head, JSON metadata; loading is strict and never unpickles).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from attiqa_loss import AttiqaNet
from attiqa_loss.checkpoint import check_finite_scores, network_from_metadata
from attiqa_loss.io import read_image
from attiqa_loss.weights_file import CheckpointError, json_metadata, load_strict, read_weights_file, write_weights_file

__all__ = [
    "MOS_FORMAT",
    "MosModel",
    "fit_ridge",
    "probe_model",
    "extract_features",
    "predict_images",
    "save_mos_model",
    "load_mos_model",
]

MOS_FORMAT = "attiqa-mos"
MOS_FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class MosModel(nn.Module):
    """Pretrained attribute network features + a linear MOS head.

    ``prediction = mos_mean + mos_std * head((features - feature_mean) / feature_std)``

    Args:
        net: the (pretrained) :class:`AttiqaNet`; only ``forward_features`` is used.
        mode: ``"probe"`` (frozen backbone) or ``"full"`` (fine-tuned backbone).
        feature_mean, feature_std: ``(C,)`` feature standardisation (default 0 / 1).
        mos_mean, mos_std: the MOS scale the head's output is mapped back to.

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1].
        - Output: ``(B,)`` predicted MOS in the training CSV's units.
    """

    def __init__(
        self,
        net: AttiqaNet,
        mode: str = "probe",
        *,
        feature_mean: Optional[torch.Tensor] = None,
        feature_std: Optional[torch.Tensor] = None,
        mos_mean: float = 0.0,
        mos_std: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("probe", "full"):
            raise ValueError(f"mode must be 'probe' or 'full', got {mode!r}")
        if not mos_std > 0:
            raise ValueError(f"mos_std must be > 0, got {mos_std}")
        self.net = net
        self.mode = mode
        c = net.num_features
        self.head = nn.Linear(c, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("feature_mean", torch.zeros(c) if feature_mean is None else feature_mean.float().clone())
        self.register_buffer("feature_std", torch.ones(c) if feature_std is None else feature_std.float().clone())
        self.register_buffer("mos_mean", torch.tensor(float(mos_mean)))
        self.register_buffer("mos_std", torch.tensor(float(mos_std)))

    def forward_normalized(self, features: torch.Tensor) -> torch.Tensor:
        """Head output in standardised MOS units. ``(B, C)`` -> ``(B,)``."""
        z = (features - self.feature_mean) / self.feature_std
        return self.head(z).squeeze(-1)

    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted MOS from backbone features. ``(B, C)`` -> ``(B,)``."""
        return self.mos_mean + self.mos_std * self.forward_normalized(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict_features(self.net.forward_features(images))


def fit_ridge(
    features: torch.Tensor,
    targets: torch.Tensor,
    alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
    *,
    folds: int = 5,
    seed: int = 0,
) -> Dict[str, Any]:
    """Closed-form ridge regression of standardised targets on standardised features.

    The penalty is ``alpha * n`` (``alpha`` is per sample, so the grid means the same for
    any dataset size); ``alpha`` is the grid value with the lowest k-fold validation MSE.

    Args:
        features: ``(N, C)``; targets: ``(N,)`` MOS.

    Returns:
        ``{"weight": (C,), "bias": float, "alpha": float, "feature_mean": (C,),
        "feature_std": (C,), "mos_mean": float, "mos_std": float, "cv_mse": {alpha: mse}}``
        where the prediction is ``mos_mean + mos_std * (z @ weight + bias)`` on
        ``z = (f - feature_mean) / feature_std``.
    """
    x = features.double()
    y = targets.double().reshape(-1)
    n = x.shape[0]
    if n != y.shape[0] or n < 3:
        raise ValueError(f"ridge needs >= 3 matching rows, got features {tuple(x.shape)} and targets {tuple(y.shape)}")
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"ridge alphas must be a non-empty list of positive numbers, got {list(alphas)}")
    f_mean, f_std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-8)
    m_mean, m_std = float(y.mean()), float(y.std(unbiased=False)) or 1.0
    z, t = (x - f_mean) / f_std, (y - m_mean) / m_std

    def solve(zz: torch.Tensor, tt: torch.Tensor, alpha: float) -> Tuple[torch.Tensor, float]:
        zm, tm = zz.mean(0), tt.mean()
        zc, tc = zz - zm, tt - tm
        k, c = zc.shape
        lam = alpha * k
        if c <= k:
            w = torch.linalg.solve(zc.T @ zc + lam * torch.eye(c, dtype=zc.dtype), zc.T @ tc)
        else:  # dual form: cheaper when features outnumber samples
            w = zc.T @ torch.linalg.solve(zc @ zc.T + lam * torch.eye(k, dtype=zc.dtype), tc)
        return w, float(tm - zm @ w)

    folds = max(2, min(int(folds), n))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    parts = [order[i::folds] for i in range(folds)]
    cv = {}
    for alpha in alphas:
        err = 0.0
        for part in parts:
            mask = torch.ones(n, dtype=torch.bool)
            mask[part] = False
            w, b = solve(z[mask], t[mask], float(alpha))
            err += float(((z[part] @ w + b - t[part]) ** 2).sum())
        cv[float(alpha)] = err / n
    best = min(cv, key=lambda a: (cv[a], -a))  # ties: the stronger penalty
    w, b = solve(z, t, best)
    return {
        "weight": w.float(),
        "bias": b,
        "alpha": best,
        "feature_mean": f_mean.float(),
        "feature_std": f_std.float(),
        "mos_mean": m_mean,
        "mos_std": m_std,
        "cv_mse": cv,
    }


def probe_model(net: AttiqaNet, ridge: Mapping[str, Any]) -> MosModel:
    """A :class:`MosModel` in probe mode from a :func:`fit_ridge` result."""
    model = MosModel(
        net, "probe", feature_mean=ridge["feature_mean"], feature_std=ridge["feature_std"],
        mos_mean=ridge["mos_mean"], mos_std=ridge["mos_std"],
    )
    with torch.no_grad():
        model.head.weight.copy_(ridge["weight"].view(1, -1))
        model.head.bias.fill_(float(ridge["bias"]))
    return model


@torch.no_grad()
def _per_image(fn, paths: Sequence[Path], max_side: Optional[int], device, desc: str, progress: bool) -> torch.Tensor:
    from tqdm import tqdm

    out = []
    for p in tqdm(paths, desc=desc, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        try:
            image = read_image(p, max_side=max_side)
        except Exception as exc:  # a MOS set must be complete: name the file
            raise OSError(f"cannot read image {p}: {type(exc).__name__}: {exc}") from exc
        out.append(fn(image[None].to(device)).float().cpu())
    return torch.cat(out)


def extract_features(
    net: AttiqaNet, paths: Sequence[Path], *, max_side: Optional[int] = 1024, device="cpu", progress: bool = True
) -> torch.Tensor:
    """Pooled backbone features of every image at its own size (longer side capped at ``max_side``).

    Returns:
        ``(N, C)`` float32.
    """
    net = net.to(device).eval()
    return _per_image(net.forward_features, paths, max_side, device, "features", progress)


def predict_images(
    model: Union[MosModel, AttiqaNet],
    paths: Sequence[Path],
    *,
    max_side: Optional[int] = 1024,
    device="cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Per-image predictions ``(N,)``: MOS for a :class:`MosModel`; for a bare
    :class:`AttiqaNet` (zero-shot) the mean of its five attribute scores in [0, 1]."""
    model = model.to(device).eval()
    if isinstance(model, MosModel):
        fn = model
    else:
        def fn(x):
            return model(x).mean(dim=1)
    return _per_image(fn, paths, max_side, device, "predict", progress)


def save_mos_model(model: MosModel, path: PathLike, *, training: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a :class:`MosModel` (backbone + head) as one safetensors file, atomically.

    Metadata: ``format`` (``"attiqa-mos"``), ``format_version``, ``mode``, ``net`` (the
    :meth:`AttiqaNet.config`), ``training`` (free-form JSON).
    """
    return write_weights_file(path, model.state_dict(), format=MOS_FORMAT, version=MOS_FORMAT_VERSION,
                              metadata={"mode": model.mode, "net": model.net.config(), "training": dict(training or {})})


def load_mos_model(path: PathLike, *, map_location="cpu") -> MosModel:
    """Rebuild a :class:`MosModel` saved by :func:`save_mos_model` (strict; nothing unpickled).
    Its training metadata is ``model.training_info``. Files written before the version key
    was called ``format_version`` (``version``) still load.

    Raises:
        FileNotFoundError: no file. CheckpointError: another format, tensors that do
        not match the stored network description (missing/unexpected keys listed), or a
        network whose attribute scores of a small test image are not finite.
    """
    state, meta = read_weights_file(
        path, format=MOS_FORMAT, version=MOS_FORMAT_VERSION, what=f"an {MOS_FORMAT} model", noun="MOS model",
        legacy_version_keys=("version",), hint={"attiqa": " (an attribute checkpoint: use --zero-shot --checkpoint)"})
    cfg = json_metadata(path, meta, "net")["net"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("attributes"), list):
        raise CheckpointError(f"{path}: metadata net must be a JSON object with backbone, attributes, mean, std")
    net = network_from_metadata(
        path, cfg.get("backbone"), cfg["attributes"], cfg.get("mean"), cfg.get("std"),
        cfg.get("backbone_kwargs", {}), prefix="net.", tone=cfg.get("normalize_tone", False),
        centre_chroma=cfg.get("centre_chroma", False),
        tensor_shapes={k: tuple(v.shape) for k, v in state.items()}, does_not_match="its network",
    )
    try:
        model = MosModel(net, meta.get("mode", "probe"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata {exc}") from exc
    load_strict(model, state, path, does_not_match="its network")
    check_finite_scores(model.net, path, source="its network")
    model.training_info = json_metadata(path, meta, optional=("training",))["training"]
    return model.to(map_location).eval()
