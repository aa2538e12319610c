"""Building the CLIP teacher: which open_clip model, which weights, and the ``clip`` config section.

docs/method.md, section 4: for L2-normalised image features ``f`` and text features ``t+``,
``t-`` (each the L2-normalised mean of the L2-normalised features of its prompts)::

    p_a = softmax(tau * [cos(f, t+), cos(f, t-)])[0]      tau = logit_scale.exp()

``p_a`` is quality-aligned: the positive prompt is the desirable pole, so 1 = sharp,
high contrast, well lit, colourful, noise-free. The built teacher, its features and
pseudo-labels and CLIP's image geometry are in :mod:`pretrain.clip.teacher`.

The model is named like open_clip does (``"RN50"``, ``"ViT-B-32"``) or given as a path
to an open_clip model-config JSON (``{"embed_dim", "vision_cfg", "text_cfg"}``, e.g. the
tiny ``configs/open_clip_tiny.json`` for offline trials); such a file is not added to
open_clip's model registry, which is left as it was. Weights are an open_clip
pretrained tag (downloaded by open_clip on the user's machine), a local checkpoint
file, or ``"none"`` for random initialisation. The tokenizer is open_clip's
SimpleTokenizer with the BPE vocabulary shipped inside the package: nothing downloads
unless a pretrained tag asks for it.
"""

from __future__ import annotations

import contextlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch

from .teacher import ClipTeacher

__all__ = [
    "create_clip_teacher",
    "resolve_clip_model",
    "ClipSection",
    "add_clip_arguments",
    "clip_argument_values",
]

_NO_WEIGHTS = ("none", "random", "")


def resolve_clip_model(model: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """The open_clip model name for ``model`` and, when ``model`` is a config JSON path, its config.

    A JSON file is named after its file stem and returned with its content; it is not
    registered with open_clip (:func:`create_clip_teacher` makes it visible to open_clip
    only while it builds the model). A file whose stem is already a built-in name with
    another config is refused rather than shadowing it. ``hf-hub:`` and ``local-dir:``
    names pass through to open_clip; for them and for built-in names the config is None.

    A ``.json`` name that is not a file but a shipped config's (``configs/open_clip_tiny.json``,
    ``open_clip_tiny.json``) is the shipped file, so the name works outside a clone too.

    Raises:
        FileNotFoundError: ``model`` ends in ``.json`` but no such file exists.
        ValueError: the JSON is not an open_clip model config, or the name is unknown
            (the message lists a few known names).
    """
    import open_clip

    if model.startswith(("hf-hub:", "local-dir:")):
        return model, None  # open_clip resolves these itself (hf-hub downloads on the user's machine)
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            from attiqa_train.config_files import resolve_config_path

            try:  # configs/open_clip_tiny.json (as --help says) from an installed copy: the shipped one
                path = resolve_config_path(model)
            except FileNotFoundError:
                raise FileNotFoundError(f"open_clip model config not found: {path}") from None
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(cfg, dict) or k not in cfg]
        if missing:
            raise ValueError(f"{path} is not an open_clip model config: missing key(s) {missing}")
        name = path.stem
        existing = open_clip.get_model_config(name)
        if existing is not None and existing != cfg:
            raise ValueError(
                f"{path}: an open_clip model named {name!r} already exists with another config; rename the file"
            )
        return name, cfg
    if open_clip.get_model_config(model) is None:
        known = open_clip.list_models()
        raise ValueError(
            f"unknown open_clip model {model!r}: give a name such as {known[:6]} "
            f"({len(known)} known, see open_clip.list_models()) or a path to a model-config JSON"
        )
    return model, None


@contextmanager
def _model_config_visible(name: str, cfg: Optional[Dict[str, Any]]) -> Iterator[None]:
    """Within the block, open_clip finds the model config ``cfg`` under ``name``
    (``create_model``, ``get_tokenizer``); on exit, also on an exception, its registry is
    the very dict it was before. Nothing changes when ``cfg`` is None.

    open_clip (3.x) builds models only from names it looks up in the module-level dict
    ``open_clip.factory._MODEL_CONFIGS``; ``add_model_config`` would add to it for the rest
    of the process. Here the module attribute points to a copy with ``name`` added while
    the block runs and back to the untouched original after it. (Another thread calling
    open_clip meanwhile would see the addition too.)
    """
    if cfg is None:
        yield
        return
    from open_clip import factory

    registry = factory._MODEL_CONFIGS
    factory._MODEL_CONFIGS = {**registry, name: cfg}
    try:
        yield
    finally:
        factory._MODEL_CONFIGS = registry


def _check_named_safetensors(path: Path) -> None:
    """A file named ``.safetensors`` must be one: anything else (a pickle renamed, a
    truncated download) is a one-line ``ValueError`` naming it, not a library traceback."""
    if path.suffix.lower() != ".safetensors":
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"--clip-pretrained (clip.pretrained) {path} is named .safetensors but is not a readable "
                         f"safetensors file ({reason}); give a safetensors file, a PyTorch state dict (.pt, .pth, "
                         f".bin) or an open_clip pretrained tag") from None


def _resolve_pretrained(name: str, pretrained: Optional[str]) -> Tuple[Optional[str], Dict[str, Any], bool]:
    """(value for open_clip.create_model, extra kwargs, whether it is a local file);
    validates tags and files up front."""
    import open_clip

    if pretrained is None or str(pretrained).lower() in _NO_WEIGHTS:
        return None, {}, False
    pretrained = str(pretrained)
    tag_cfg = open_clip.pretrained.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        # OpenAI weights were trained with QuickGELU; building without it silently degrades them.
        return pretrained, {"force_quick_gelu": bool(tag_cfg.get("quick_gelu", False))}, False
    if Path(pretrained).is_file():
        _check_named_safetensors(Path(pretrained))
        return pretrained, {}, True
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"--clip-pretrained {pretrained!r} is neither a pretrained tag of {name!r} (known: {tags}) "
        f"nor an existing file; use 'none' for random weights"
    )


def _raise_if_not_its_state_dict(name: str, model: str, weights: str, load: str, extra: Dict[str, Any],
                                 exc: BaseException) -> None:
    """Raise a one-line ``ValueError`` naming ``--clip-pretrained`` when open_clip failed
    (``exc``) to load the local weight file ``load`` (the safetensors copy of ``weights``)
    because its tensors are not those of model ``name``: the model is built on the meta
    device (nothing allocated, no random draw) and its state dict compared with the
    file's header. Returns when nothing differs and ``exc`` is not a state-dict error
    (the caller raises ``exc`` again)."""
    import logging

    import open_clip

    from attiqa_loss.checkpoint import CheckpointError
    from attiqa_loss.weights_file import read_tensor_shapes, state_dict_differences

    try:
        found = read_tensor_shapes(load)
    except CheckpointError:
        found = None
    differences = ""
    if found is not None:
        logging.disable(logging.WARNING)  # open_clip's "No pretrained weights loaded" for the skeleton
        try:
            with torch.device("meta"):
                skeleton = open_clip.create_model(name, pretrained=None, device="meta", **extra)
        finally:
            logging.disable(logging.NOTSET)
        differences = state_dict_differences(skeleton.state_dict(), found)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")
    if not differences and not first.startswith("Error(s) in loading state_dict"):
        return
    raise ValueError(f"--clip-pretrained (clip.pretrained) {weights} is not a state dict of open_clip model "
                     f"{model!r}: {differences or first}") from None


def create_clip_teacher(
    model: str = "RN50",
    pretrained: Optional[str] = "openai",
    *,
    device: Union[str, torch.device] = "cpu",
    tau: Optional[float] = None,
    init_seed: int = 0,
) -> ClipTeacher:
    """Build the CLIP teacher.

    Args:
        model: open_clip model name (``"RN50"``, ``"ViT-B-32"``, ...) or a path to an
            open_clip model-config JSON.
        pretrained: an open_clip pretrained tag (e.g. ``"openai"``; open_clip downloads it
            into its cache), a local checkpoint file (safetensors, or a PyTorch file of
            tensors only: read with ``torch.load(weights_only=True)`` and handed to
            open_clip as safetensors, so nothing in it is unpickled as code; a TorchScript
            archive is refused), or ``"none"`` / ``None`` for random weights.
        device: where the model runs.
        tau: softmax temperature; default the model's ``logit_scale.exp()``.
        init_seed: seed of the random initialisation (matters only without weights:
            every process and every resumed run builds the same random model).

    Returns:
        A :class:`ClipTeacher` in eval mode with frozen parameters.
    """
    import open_clip

    name, config = resolve_clip_model(str(model))
    if name != str(model):  # a config file: record where it is, whatever the working folder
        model = str(Path(model).resolve())
    schema = name.split(":", 1)[0] if name.startswith(("hf-hub:", "local-dir:")) else None
    # A schema name carries its own weights; open_clip ignores `pretrained` for it.
    weights, extra, local = (None, {}, False) if schema else _resolve_pretrained(name, pretrained)
    # Random weights must be the same in every rank and after a resume, so they come
    # from a fixed seed without touching the caller's RNG.
    with _model_config_visible(name, config), contextlib.ExitStack() as stack:
        load = weights
        if local:  # open_clip gets the user's file only as safetensors: it never unpickles it, whatever its version
            from attiqa_loss.weights_file import OPEN_CLIP_STATE_KEYS, safetensors_copy

            load = str(stack.enter_context(safetensors_copy(weights, what="--clip-pretrained (clip.pretrained)",
                                                            state_keys=OPEN_CLIP_STATE_KEYS)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            try:
                clip = open_clip.create_model(name, pretrained=load, device=device, **extra)
            except (RuntimeError, KeyError, ValueError, IndexError) as exc:
                if not local:
                    raise
                _raise_if_not_its_state_dict(name, str(model), weights, load, extra, exc)
                raise
        tokenizer = open_clip.get_tokenizer(name)  # its context length comes from the config
    clip.eval().requires_grad_(False)
    pp = dict(clip.visual.preprocess_cfg)
    size = pp.get("size", 224)
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    resize_mode = pp.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        raise ValueError(f"CLIP resize_mode {resize_mode!r} is not supported; expected 'shortest' or 'squash'")
    if tau is None:
        tau = float(clip.logit_scale.exp().item())
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau}")
    return ClipTeacher(
        model=clip,
        tokenizer=tokenizer,
        name=str(model),
        pretrained=schema or ("none" if weights is None else str(weights)),
        image_size=size,
        mean=tuple(float(v) for v in pp.get("mean")),
        std=tuple(float(v) for v in pp.get("std")),
        resize_mode=resize_mode,
        tau=float(tau),
        device=torch.device(device),
    )


@dataclass
class ClipSection:
    """The ``clip`` section of the select-prompts and label configs.

    Attributes:
        model: open_clip model name or path to a model-config JSON.
        pretrained: pretrained tag (downloaded by open_clip), checkpoint file, or "none".
        tau: softmax temperature; null = the model's logit_scale.exp().
        init_seed: seed of the random initialisation when ``pretrained`` is "none".
    """

    model: str = "RN50"
    pretrained: str = "openai"
    tau: Optional[float] = None
    init_seed: int = 0


def add_clip_arguments(parser) -> None:
    """``--clip-model`` and ``--clip-pretrained`` (they override the config's ``clip`` section)."""
    parser.add_argument(
        "--clip-model",
        help="open_clip model name (RN50, ViT-B-32, ...) or path to an open_clip model-config JSON "
        "(configs/open_clip_tiny.json for offline trials); overrides clip.model",
    )
    parser.add_argument(
        "--clip-pretrained",
        help="open_clip pretrained tag (e.g. openai; downloaded by open_clip), a local checkpoint file, "
        "or 'none' for random weights (throughput trials and tests only); overrides clip.pretrained",
    )


def clip_argument_values(args) -> Dict[str, Any]:
    """``{config key: value}`` of the ``--clip-model`` / ``--clip-pretrained`` flags that
    were given, for :func:`attiqa_train.config.load_config` ``values=`` (the config is
    then validated once, with them)."""
    values: Dict[str, Any] = {}
    if getattr(args, "clip_model", None):
        values["clip.model"] = args.clip_model
    if getattr(args, "clip_pretrained", None):
        values["clip.pretrained"] = args.clip_pretrained
    return values
