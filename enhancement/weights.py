"""Exported enhancer weights: one ``safetensors`` file whose metadata rebuilds the U-Net.

``attiqa-enhance infer`` reads only this format, so running a model never unpickles
anything. Written and read by :mod:`attiqa_loss.weights_file`; metadata keys (strings):
``format`` = ``"attiqa-enhancer"``, ``format_version``, ``unet`` (JSON constructor
arguments), ``training`` (JSON: config, final metrics, the quality model used).
Loading checks every ``unet`` value against :data:`enhancement.unet.UNET_LIMITS` and
compares the header's tensor shapes with the network built on the meta device before
any tensor is read or any weight allocated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from attiqa_loss.weights_file import (CheckpointError, json_metadata, load_strict, read_tensor_shapes, read_weights_file,
                                     state_dict_differences, write_weights_file)

from .unet import UNet, check_unet_config

__all__ = ["DEFAULT_ENHANCER_PATH", "ENHANCER_FILENAME", "ENHANCER_FORMAT", "ENHANCER_FORMAT_VERSION", "save_enhancer",
           "load_enhancer", "resolve_enhancer_path"]

ENHANCER_FILENAME = "enhancer.safetensors"
ENHANCER_FORMAT = "attiqa-enhancer"
ENHANCER_FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]
#: The enhancer shipped in the package (docs/enhancement.md, "The shipped enhancer"):
#: what ``load_enhancer()`` and ``attiqa-enhance infer`` without ``--checkpoint`` use.
DEFAULT_ENHANCER_PATH = Path(__file__).resolve().parent / "weights" / "enhancer_default.safetensors"


def save_enhancer(model: UNet, path: PathLike, *, training: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s weights (float32) and constructor arguments to ``path`` atomically."""
    tensors = {k: v.detach().float() for k, v in model.state_dict().items()}
    return write_weights_file(path, tensors, format=ENHANCER_FORMAT, version=ENHANCER_FORMAT_VERSION,
                              metadata={"unet": model.config(), "training": dict(training or {})})


def resolve_enhancer_path(run_or_file: Optional[PathLike] = None) -> Path:
    """A run folder (holding ``enhancer.safetensors``) or the file itself -> the file;
    None -> the shipped enhancer (:data:`DEFAULT_ENHANCER_PATH`)."""
    if run_or_file is None:
        if not DEFAULT_ENHANCER_PATH.is_file():
            raise FileNotFoundError(f"the shipped enhancer {DEFAULT_ENHANCER_PATH} is missing from this install; "
                                    "pass a run folder or an enhancer .safetensors file")
        return DEFAULT_ENHANCER_PATH
    p = Path(run_or_file)
    if p.is_dir():
        p = p / ENHANCER_FILENAME
    if not p.is_file():
        raise FileNotFoundError(
            f"no enhancer weights at {p} (expected a run folder with {ENHANCER_FILENAME} or the file)"
        )
    return p


def load_enhancer(run_or_file: Optional[PathLike] = None, *,
                  map_location: Union[str, torch.device] = "cpu") -> UNet:
    """Rebuild the U-Net saved by :func:`save_enhancer` (strict; nothing unpickled).

    Args:
        run_or_file: the ``.safetensors`` file or a run folder holding ``enhancer.safetensors``;
            None: the enhancer shipped in the package.
        map_location: device for the returned model.

    Returns:
        The model in eval mode; its training metadata is ``model.training_info`` (as for
        the quality model and the MOS head).

    Raises:
        FileNotFoundError: nothing at the path.
        CheckpointError (a ``ValueError``): not an enhancer file, another format version,
            a ``unet`` value outside :data:`enhancement.unet.UNET_LIMITS` (named), or
            weights that do not match the stored architecture (missing/unexpected keys
            and shape mismatches are listed; compared from the file's header with the
            network built on the meta device, so nothing is allocated before they match),
            or a tensor that holds NaN/infinity or is not floating point (named).
    """
    path = resolve_enhancer_path(run_or_file)
    _, meta = read_weights_file(path, format=ENHANCER_FORMAT, version=ENHANCER_FORMAT_VERSION,
                                what="an attiqa enhancer", noun="enhancer weights", tensors=False)
    config = json_metadata(path, meta, "unet")["unet"]
    if isinstance(config, dict) and config.get("output") == "gain":
        config.setdefault("gain_param", "tanh")  # written before the key existed: the first parametrisation
    try:  # every value within UNET_LIMITS ...
        config = check_unet_config(config, "unet")
        with torch.device("meta"):  # ... and the network it describes, without allocating it,
            skeleton = UNet(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: metadata {exc}") from None
    does_not_match = f"its U-Net config {meta['unet']}"
    differences = state_dict_differences(skeleton.state_dict(), read_tensor_shapes(path))
    if differences:  # ... has the shapes of the stored tensors, before any is read or the network built
        raise CheckpointError(f"{path} does not match {does_not_match}: {differences}")
    state, _ = read_weights_file(path, format=ENHANCER_FORMAT, version=ENHANCER_FORMAT_VERSION,
                                 what="an attiqa enhancer", noun="enhancer weights")
    model = UNet(**config)
    load_strict(model, state, path, does_not_match=does_not_match)
    model.training_info = json_metadata(path, meta, optional=("training",))["training"]
    return model.to(map_location).eval()
