"""Exported enhancer weights: one ``safetensors`` file whose metadata rebuilds the U-Net.

``attiqa-enhance infer`` reads only this format, so running a model never unpickles
anything. Metadata keys (strings): ``format`` = ``"attiqa-enhancer"``, ``format_version``,
``unet`` (JSON constructor arguments), ``training`` (JSON: config, final metrics, the
quality model used).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from attiqa_loss.checkpoint import check_state_tensors, state_dict_differences
from attiqa_loss.io import atomic_path

from .unet import UNet

__all__ = ["ENHANCER_FILENAME", "ENHANCER_FORMAT_VERSION", "save_enhancer", "load_enhancer", "resolve_enhancer_path"]

ENHANCER_FILENAME = "enhancer.safetensors"
ENHANCER_FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


def save_enhancer(model: UNet, path: PathLike, *, training: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s weights and constructor arguments to ``path`` atomically."""
    metadata = {
        "format": "attiqa-enhancer",
        "format_version": str(ENHANCER_FORMAT_VERSION),
        "unet": json.dumps(model.config()),
        "training": json.dumps(dict(training or {}), default=str),
    }
    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def resolve_enhancer_path(run_or_file: PathLike) -> Path:
    """A run folder (holding ``enhancer.safetensors``) or the file itself -> the file."""
    p = Path(run_or_file)
    if p.is_dir():
        p = p / ENHANCER_FILENAME
    if not p.is_file():
        raise FileNotFoundError(
            f"no enhancer weights at {p} (expected a run folder with {ENHANCER_FILENAME} or the file)"
        )
    return p


def load_enhancer(
    run_or_file: PathLike, *, map_location: Union[str, torch.device] = "cpu"
) -> Tuple[UNet, Dict[str, Any]]:
    """Rebuild the U-Net saved by :func:`save_enhancer` (strict; nothing unpickled).

    Args:
        run_or_file: the ``.safetensors`` file or a run folder holding ``enhancer.safetensors``.
        map_location: device for the returned model.

    Returns:
        ``(model in eval mode, training metadata dict)``.

    Raises:
        FileNotFoundError: nothing at the path.
        ValueError: not an enhancer file, another format version, or weights that do not
            match the stored architecture (missing/unexpected keys and shape
            mismatches are listed), or a tensor that holds NaN/infinity or is not
            floating point (named).
    """
    path = resolve_enhancer_path(run_or_file)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != "attiqa-enhancer":
        raise ValueError(f"{path} is not an attiqa enhancer (metadata format={meta.get('format')!r})")
    if meta.get("format_version") != str(ENHANCER_FORMAT_VERSION):
        raise ValueError(
            f"{path} has format_version={meta.get('format_version')!r}; expected {ENHANCER_FORMAT_VERSION}"
        )
    try:
        model = UNet(**json.loads(meta["unet"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has a missing or malformed U-Net config in its metadata: {exc!r}") from exc
    differences = state_dict_differences(model.state_dict(), state)
    if differences:
        raise ValueError(f"{path} does not match its U-Net config {meta['unet']}: {differences}")
    check_state_tensors(path, state, model.state_dict())  # NaN/inf or integer weights: a ValueError naming the tensor
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), json.loads(meta.get("training", "{}"))
