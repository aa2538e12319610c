"""Checkpoint format: one ``safetensors`` file with JSON metadata (docs/method.md, section 5).

Metadata keys (all strings, JSON-encoded where structured):

- ``format``: ``"attiqa"``; ``format_version``: :data:`FORMAT_VERSION`
- ``backbone``, ``attributes`` (list), ``normalization`` (``{"mean": [...], "std": [...]}``,
  plus ``"tone": true`` for a network built with ``normalize_tone`` and ``"centre_chroma": true``
  for one built with ``centre_chroma``; absent means false),
  ``backbone_kwargs`` (dict)
- ``training``: free-form dict describing how the model was made (recipe, data, steps,
  proxy SRCC table, ...)

Loading is strict and never unpickles anything. Every tensor must be finite and of the
network's kind (floating point where the network has floating point); the
normalisation must hold three finite means and three finite standard deviations > 0;
``backbone`` must be an architecture name that ``timm.list_models()`` lists (no
``hf-hub:``/``local-dir:`` scheme, no path: :func:`check_backbone_name`), checked before
timm is called; ``backbone_kwargs`` may only hold the architecture options of
:data:`ALLOWED_BACKBONE_KWARGS` (nothing that names a file). Each violation is a
one-line :class:`CheckpointError` naming the file, the tensor or key and the value
(the file itself is written and read by :mod:`attiqa_loss.weights_file`). Finite
tensors can still make a network whose scores are not (a BatchNorm ``running_var`` < 0
gives NaN everywhere), so the loaded network scores one small fixed image
(:func:`probe_image`) and a non-finite score refuses the file (:func:`check_finite_scores`).
Before the network is built, it is built on the meta device and its tensor shapes compared
with the file's header (:func:`network_from_metadata`): allowed ``backbone_kwargs`` such
as ``base_width`` 4096 cannot make a small file allocate a huge network.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from .attributes import ATTRIBUTES
from .network import AttiqaNet
from .weights_file import (CheckpointError, check_state_tensors, json_metadata, load_strict, read_tensor_shapes,
                           read_weights_file, state_dict_differences, write_weights_file)

__all__ = [
    "FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint_metadata",
    "state_dict_differences", "ALLOWED_BACKBONE_KWARGS", "check_backbone_name", "check_backbone_kwargs",
    "check_normalization", "probe_image", "check_finite_scores",
    "check_state_tensors", "network_from_metadata",
]

#: The ``format`` of a quality-model checkpoint, and its layout version.
FORMAT = "attiqa"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a layer name such as "avg" or "relu", never a path


def _number(low: float, high: float, *, integer: bool = False, closed_high: bool = True):
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return False
        return math.isfinite(v) and low <= v and (v <= high if closed_high else v < high)

    kind = "an integer" if integer else "a number"
    return ok, f"{kind} in [{low}, {high}{']' if closed_high else ')'}"


def _name(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(_NAME.match(v)))


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


_LAYER_NAME = (_name, "null or a layer name (letters, digits, '_')")

#: The timm architecture options a checkpoint's ``backbone_kwargs`` may hold, each with
#: its accepted values. Options that name files or download weights (``checkpoint_path``,
#: ``pretrained``, ``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``, ...)
#: and options the network sets itself (``num_classes``, ``global_pool``, ``in_chans``)
#: are not among them.
ALLOWED_BACKBONE_KWARGS = {
    "aa_layer": _LAYER_NAME,
    "act_layer": _LAYER_NAME,
    "norm_layer": _LAYER_NAME,
    "drop_rate": _number(0.0, 1.0, closed_high=False),
    "drop_path_rate": _number(0.0, 1.0, closed_high=False),
    "drop_block_rate": _number(0.0, 1.0, closed_high=False),
    "output_stride": ((lambda v: v in (8, 16, 32) and not isinstance(v, bool)), "8, 16 or 32"),
    "stem_type": ((lambda v: isinstance(v, str) and (v == "" or bool(_NAME.match(v)))), "a stem name"),
    "stem_width": _number(1, 4096, integer=True),
    "replace_stem_pool": (_flag, "true or false"),
    "avg_down": (_flag, "true or false"),
    "down_kernel_size": _number(1, 15, integer=True),
    "block_reduce_first": _number(1, 64, integer=True),
    "cardinality": _number(1, 1024, integer=True),
    "base_width": _number(1, 4096, integer=True),
    "zero_init_last": (_flag, "true or false"),
}


def check_backbone_name(name: Any, source: str = "backbone") -> str:
    """Return ``name`` if it is an architecture name that ``timm.list_models()`` lists;
    else raise a one-line :class:`CheckpointError` naming ``source`` and the value.

    A file's ``backbone`` reaches :func:`timm.create_model`, which reads a scheme prefix
    (``"hf-hub:org/repo"`` downloads a model and its config, ``"local-dir:/some/dir"``
    reads one from disk) and a pretrained tag (``"resnet50.a1_in1k"``); so a name with
    ``":"``, a path separator, or one timm does not list as an architecture is refused
    before anything is built, read or fetched."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source} must be a timm architecture name, got {name!r}")
    if ":" in name or "/" in name or "\\" in name:
        raise CheckpointError(
            f"{source}={name!r} is not a timm architecture name (a scheme prefix or a path would make timm "
            f"read a file or fetch a model); expected a name that timm.list_models() lists, e.g. 'resnet50'"
        )
    import timm

    if name not in set(timm.list_models()):
        raise CheckpointError(
            f"{source}={name!r} is not an architecture that timm.list_models() lists (timm {timm.__version__}); "
            f"expected a name such as 'resnet10t' or 'resnet50'"
        )
    return name


def check_backbone_kwargs(kwargs: Any, source: str = "backbone_kwargs") -> Dict[str, Any]:
    """Return ``kwargs`` if it only holds :data:`ALLOWED_BACKBONE_KWARGS` with accepted
    values; else raise a one-line :class:`CheckpointError` naming ``source``, the key
    and the value (an unknown key lists the allowed ones)."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source} must be a JSON object of timm architecture options, got {kwargs!r}")
    for key, value in kwargs.items():
        if key not in ALLOWED_BACKBONE_KWARGS:
            raise CheckpointError(
                f"{source} holds {key!r}={value!r}, which is not an allowed architecture option; "
                f"allowed: {sorted(ALLOWED_BACKBONE_KWARGS)}"
            )
        ok, expected = ALLOWED_BACKBONE_KWARGS[key]
        if not ok(value):
            raise CheckpointError(f"{source}.{key} must be {expected}, got {value!r}")
    return dict(kwargs)


#: Bounds of the normalisation's ``mean`` and ``std`` (per channel, for inputs in [0, 1]):
#: far outside them every score saturates (a std of 1e-30 or a mean of 1e38 loaded before).
NORMALIZATION_BOUNDS = {"mean": (-10.0, 10.0), "std": (1e-3, 100.0)}


def check_normalization(mean: Any, std: Any, source: str = "normalization") -> None:
    """Raise a one-line :class:`CheckpointError` unless ``mean`` and ``std`` are three
    finite numbers each, every ``std`` is > 0 and every value is within
    :data:`NORMALIZATION_BOUNDS` (``source`` prefixes the key names)."""
    for key, values in (("mean", mean), ("std", std)):
        if values is None:
            raise CheckpointError(f"{source}.{key} is missing")
        if (
            not isinstance(values, (list, tuple))
            or len(values) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values)
        ):
            raise CheckpointError(f"{source}.{key} must be a list of 3 finite numbers, got {values!r}")
    if min(std) <= 0:
        raise CheckpointError(f"{source}.std must be > 0 in every channel, got {list(std)!r}")
    for key, values in (("mean", mean), ("std", std)):
        low, high = NORMALIZATION_BOUNDS[key]
        if not all(low <= v <= high for v in values):
            raise CheckpointError(f"{source}.{key} must be within [{low:g}, {high:g}] in every channel (inputs are "
                                  f"in [0, 1]), got {list(values)!r}")


#: Side of :func:`probe_image`: one forward of this size costs little for any backbone.
PROBE_SIZE = 64


def probe_image(size: int = PROBE_SIZE) -> torch.Tensor:
    """The fixed image every loaded quality model must score finitely: ``(1, 3, size, size)``
    in [0, 1], red rising left to right, green top to bottom, blue along the diagonal."""
    ramp = torch.linspace(0.0, 1.0, size)
    x, y = ramp.view(1, size).expand(size, size), ramp.view(size, 1).expand(size, size)
    return torch.stack([x, y, (x + y) / 2])[None]


def check_finite_scores(net: AttiqaNet, path: Any, *, source: str = "the network") -> None:
    """Score :func:`probe_image` once (``net`` is put in eval mode, no gradients) and raise a
    one-line :class:`CheckpointError` naming ``path`` when any score is not finite: tensors
    that are finite one by one can still give NaN together (a BatchNorm ``running_var`` < 0,
    named when present)."""
    net.eval()
    param = next(net.parameters(), None)
    image = probe_image()
    if param is not None:
        image = image.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        scores = net(image, check=False)[0]
    bad = [f"{name}={float(v)}" for name, v in zip(net.attributes, scores) if not math.isfinite(float(v))]
    if bad:
        negative = [k for k, v in net.state_dict().items()
                    if k.endswith("running_var") and v.is_floating_point() and bool((v < 0).any())]
        cause = f"; BatchNorm running_var < 0 in {negative}" if negative else ""
        raise CheckpointError(
            f"{path}: {source} gives non-finite scores on a {PROBE_SIZE}x{PROBE_SIZE} test gradient "
            f"({', '.join(bad)}){cause}"
        )


def network_from_metadata(
    path: Any,
    backbone: Any,
    attributes: Sequence[str],
    mean: Any,
    std: Any,
    backbone_kwargs: Any,
    *,
    prefix: str = "",
    tone: Any = False,
    centre_chroma: Any = False,
    tensor_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    does_not_match: Optional[str] = None,
) -> AttiqaNet:
    """Build the :class:`AttiqaNet` a file's metadata describes, after checking the
    backbone name, the normalisation and ``backbone_kwargs``; every failure is a
    :class:`CheckpointError` naming ``path`` and the metadata key (``prefix`` says where
    the keys live).

    With ``tensor_shapes`` (the file's ``{name: shape}``, :func:`read_tensor_shapes`), the
    network is first built on the meta device (no weight allocated) and its state dict
    compared with them: a file whose tensors are not those of the network it describes
    is refused (``"<path> does not match <does_not_match>: ..."``) before the network is
    built for real, so a few-kB file naming ``base_width`` 4096 cannot make the loader
    allocate a huge network. Keys of ``tensor_shapes`` are compared under ``prefix``
    (``"net."`` for a MOS model, whose other keys are its head's)."""
    norm = f"{prefix}normalization" if not prefix else prefix.rstrip(".")
    try:
        check_backbone_name(backbone, f"{prefix}backbone")
        check_normalization(mean, std, norm)
        kwargs = check_backbone_kwargs(backbone_kwargs, f"{prefix}backbone_kwargs")
        if not isinstance(tone, bool):
            key = f"{prefix}normalize_tone" if prefix else "normalization.tone"
            raise CheckpointError(f"{key} must be true or false, got {tone!r}")
        key = f"{prefix}centre_chroma" if prefix else "normalization.centre_chroma"
        if not isinstance(centre_chroma, bool):
            raise CheckpointError(f"{key} must be true or false, got {centre_chroma!r}")
        if centre_chroma and not tone:
            raise CheckpointError(f"{key} is true without tone normalisation, which it needs")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: metadata {exc}") from None

    def build() -> AttiqaNet:
        try:
            return AttiqaNet(backbone, attributes, mean, std, backbone_kwargs=kwargs, normalize_tone=tone,
                             centre_chroma=centre_chroma)
        except RuntimeError as exc:  # timm: unknown model name
            raise CheckpointError(f"{path} names backbone {backbone!r} that timm cannot build: {exc}") from exc
        except (TypeError, ValueError, AssertionError) as exc:  # an option this backbone does not take
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"{path}: backbone {backbone!r} cannot be built with {prefix}backbone_kwargs={kwargs!r}: {message}"
            ) from exc

    if tensor_shapes is not None:
        with torch.device("meta"):  # the network the metadata describes, without allocating it
            skeleton = build()
        expected = {prefix + k: v for k, v in skeleton.state_dict().items()}
        found = {k: tuple(v) for k, v in tensor_shapes.items() if k.startswith(prefix)}
        # The heads come first: their input width is the backbone's feature width, the
        # difference that tells two backbones apart (the lists are cut after a few keys).
        differences = state_dict_differences(expected, found, first=(f"{prefix}heads.",))
        if differences:
            raise CheckpointError(f"{path} does not match {does_not_match or f'backbone {backbone!r}'}: {differences}")
    return build()


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
    check_backbone_name(config["backbone"], "the network's backbone")
    check_backbone_kwargs(config["backbone_kwargs"], "the network's backbone_kwargs")
    metadata = {
        "backbone": config["backbone"],
        "attributes": config["attributes"],
        "normalization": {"mean": config["mean"], "std": config["std"],
                          **({"tone": True} if config["normalize_tone"] else {}),
                          **({"centre_chroma": True} if config["centre_chroma"] else {})},
        "backbone_kwargs": config["backbone_kwargs"],
        "training": dict(training or {}),
    }
    tensors = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
               for k, v in net.state_dict().items()}
    return write_weights_file(path, tensors, format=FORMAT, version=FORMAT_VERSION, metadata=metadata)


def read_checkpoint_metadata(path: PathLike) -> Dict[str, Any]:
    """Parsed metadata of a checkpoint (JSON fields decoded); raises :class:`CheckpointError`."""
    _, raw = read_weights_file(path, format=FORMAT, version=FORMAT_VERSION, what="an attiqa checkpoint",
                               noun="checkpoint", tensors=False)
    return {**raw, **json_metadata(path, raw, "attributes", "normalization", "backbone_kwargs", "training")}


def load_checkpoint(path: PathLike, *, map_location: Union[str, torch.device] = "cpu") -> AttiqaNet:
    """Rebuild the :class:`AttiqaNet` stored at ``path`` (strict; nothing is unpickled).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a safetensors file, another format or format version, an
            attribute order other than :data:`ATTRIBUTES`, a ``backbone`` that is not a
            name ``timm.list_models()`` lists (:func:`check_backbone_name`), malformed normalisation,
            ``backbone_kwargs`` outside :data:`ALLOWED_BACKBONE_KWARGS`, missing or
            unexpected keys, tensors whose shapes differ from the network (each
            difference is listed), non-finite tensors, integer tensors where the
            network has floating point ones, or a network whose score of
            :func:`probe_image` is not finite.
    """
    meta = read_checkpoint_metadata(path)
    if tuple(meta["attributes"]) != tuple(ATTRIBUTES):
        raise CheckpointError(
            f"{path} stores attributes {meta['attributes']}; this attiqa expects the order {list(ATTRIBUTES)}"
        )
    norm = meta["normalization"]
    if not isinstance(norm, dict):
        raise CheckpointError(f"{path}: metadata normalization must be a JSON object with mean and std, got {norm!r}")
    net = network_from_metadata(
        path, meta.get("backbone"), meta["attributes"], norm.get("mean"), norm.get("std"), meta["backbone_kwargs"],
        tone=norm.get("tone", False), centre_chroma=norm.get("centre_chroma", False),
        tensor_shapes=read_tensor_shapes(path),
        does_not_match=f"backbone {meta['backbone']!r}",
    )
    state, _ = read_weights_file(path, format=FORMAT, version=FORMAT_VERSION, what="an attiqa checkpoint",
                                 noun="checkpoint")
    load_strict(net, state, path, does_not_match=f"backbone {meta['backbone']!r}")
    check_finite_scores(net, path)
    net.training_info = meta["training"]
    return net.to(map_location).eval()
