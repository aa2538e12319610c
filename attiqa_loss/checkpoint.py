"""Checkpoint format: one ``safetensors`` file with JSON metadata (METHOD.md section 5).

Metadata keys (all strings, JSON-encoded where structured):

- ``format``: ``"attiqa"``; ``format_version``: :data:`FORMAT_VERSION`
- ``backbone``, ``attributes`` (list), ``normalization`` (``{"mean": [...], "std": [...]}``),
  ``backbone_kwargs`` (dict)
- ``training``: free-form dict describing how the model was made (recipe, data, steps,
  proxy SRCC table, ...)

Loading is strict and never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .attributes import ATTRIBUTES
from .io import atomic_path
from .network import AttiqaNet

__all__ = [
    "FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint_metadata",
    "state_dict_differences",
]

FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, of another format, or does not match the network."""


def save_checkpoint(
    net: AttiqaNet,
    path: PathLike,
    *,
    training: Optional[Mapping[str, Any]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Path:
    """Write ``net`` to ``path`` as safetensors with metadata; atomic (temp file + rename).

    Args:
        net: the network to save.
        path: destination file (``.safetensors``).
        training: JSON-serialisable description of how it was trained (recipe, data, ...).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` to halve the
            file); they are cast back to float32 on load. Default: keep as is.

    Returns:
        The path written.
    """
    config = net.config()
    metadata = {
        "format": "attiqa",
        "format_version": str(FORMAT_VERSION),
        "backbone": config["backbone"],
        "attributes": json.dumps(config["attributes"]),
        "normalization": json.dumps({"mean": config["mean"], "std": config["std"]}),
        "backbone_kwargs": json.dumps(config["backbone_kwargs"]),
        "training": json.dumps(dict(training or {}), default=str),
    }
    tensors = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_metadata(path: PathLike) -> Dict[str, Any]:
    """Parsed metadata of a checkpoint (JSON fields decoded); raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw.get("format") != "attiqa":
        raise CheckpointError(f"{path} is not an attiqa checkpoint (metadata format={raw.get('format')!r})")
    version = raw.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has checkpoint format_version={version!r}; this attiqa reads format_version={FORMAT_VERSION}"
        )
    meta: Dict[str, Any] = dict(raw)
    try:
        for key in ("attributes", "normalization", "backbone_kwargs", "training"):
            meta[key] = json.loads(raw[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has missing or malformed metadata: {exc!r}") from exc
    return meta


def state_dict_differences(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``found`` from loading strictly into a module whose state dict is
    ``expected``: ``"missing keys [...], unexpected keys [...], shape mismatches [...]"``,
    or ``""`` when nothing differs."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in sorted(set(found) & set(expected))
        if found[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return ""
    return f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {mismatched}"


def load_checkpoint(path: PathLike, *, map_location: Union[str, torch.device] = "cpu") -> AttiqaNet:
    """Rebuild the :class:`AttiqaNet` stored at ``path`` (strict; nothing is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a safetensors file, another format or format version, an
            attribute order other than :data:`ATTRIBUTES`, missing or unexpected keys, or
            tensors whose shapes differ from the network (each difference is listed).
    """
    meta = read_checkpoint_metadata(path)
    if tuple(meta["attributes"]) != tuple(ATTRIBUTES):
        raise CheckpointError(
            f"{path} stores attributes {meta['attributes']}; this attiqa expects the order {list(ATTRIBUTES)}"
        )
    norm = meta["normalization"]
    try:
        net = AttiqaNet(
            meta["backbone"],
            meta["attributes"],
            norm["mean"],
            norm["std"],
            backbone_kwargs=meta["backbone_kwargs"],
        )
    except RuntimeError as exc:  # timm: unknown model name
        raise CheckpointError(f"{path} names backbone {meta['backbone']!r} that timm cannot build: {exc}") from exc
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} tensors are unreadable: {exc}") from exc
    expected = net.state_dict()
    differences = state_dict_differences(expected, state)
    if differences:
        raise CheckpointError(f"{path} does not match backbone {meta['backbone']!r}: {differences}")
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    net.training_info = meta["training"]
    return net.to(map_location).eval()
