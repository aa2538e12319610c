"""The CLIP teacher: an open_clip model, its preprocessing, text features and pseudo-labels.

docs/method.md, section 4: for L2-normalised image features ``f`` and text features ``t+``,
``t-`` (each the L2-normalised mean of the L2-normalised features of its prompts)::

    p_a = softmax(tau * [cos(f, t+), cos(f, t-)])[0]      tau = logit_scale.exp()

``p_a`` is quality-aligned: the positive prompt is the desirable pole, so 1 = sharp,
high contrast, well lit, colourful, noise-free.

The model is named like open_clip does (``"RN50"``, ``"ViT-B-32"``) or given as a path
to an open_clip model-config JSON (``{"embed_dim", "vision_cfg", "text_cfg"}``, e.g. the
tiny ``configs/open_clip_tiny.json`` for offline trials). Weights are an open_clip
pretrained tag (downloaded by open_clip on the user's machine), a local checkpoint
file, or ``"none"`` for random initialisation. The tokenizer is open_clip's
SimpleTokenizer with the BPE vocabulary shipped inside the package: nothing downloads
unless a pretrained tag asks for it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from attiqa_loss.attributes import ATTRIBUTES

from .prompts import Prompt

__all__ = [
    "ClipTeacher",
    "create_clip_teacher",
    "resolve_clip_model_name",
    "pseudo_labels",
    "pseudo_label_logits",
    "load_clip_image",
    "ClipSection",
    "add_clip_arguments",
    "apply_clip_arguments",
]

PathLike = Union[str, os.PathLike]
_NO_WEIGHTS = ("none", "random", "")


def resolve_clip_model_name(model: str) -> str:
    """An open_clip model name, registering ``model`` first when it is a config JSON path.

    A JSON file is registered under its file stem (``open_clip.add_model_config``); a
    file whose stem is already a built-in name with another config is refused rather
    than shadowing it. ``hf-hub:`` and ``local-dir:`` names pass through to open_clip.

    Raises:
        FileNotFoundError: ``model`` ends in ``.json`` but no such file exists.
        ValueError: the JSON is not an open_clip model config, or the name is unknown
            (the message lists a few known names).
    """
    import open_clip

    if model.startswith(("hf-hub:", "local-dir:")):
        return model  # open_clip resolves these itself (hf-hub downloads on the user's machine)
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config not found: {path}")
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
        if existing is None:
            open_clip.add_model_config(path)
        return name
    if open_clip.get_model_config(model) is None:
        known = open_clip.list_models()
        raise ValueError(
            f"unknown open_clip model {model!r}: give a name such as {known[:6]} "
            f"({len(known)} known, see open_clip.list_models()) or a path to a model-config JSON"
        )
    return model


@dataclass
class ClipTeacher:
    """An open_clip model in eval mode with what pseudo-labelling needs.

    Attributes:
        model: the open_clip ``CLIP`` model (frozen, eval mode).
        tokenizer: callable ``list[str] -> (N, context) int64``.
        name, pretrained: how it was built (recorded in manifests).
        image_size: ``(H, W)`` the image encoder expects.
        mean, std: CLIP normalisation of [0, 1] RGB.
        resize_mode: ``"shortest"`` (resize shorter side + centre crop) or ``"squash"``.
        tau: softmax temperature, ``logit_scale.exp()`` (100 for trained CLIP, about 14.3
            for a random one).
    """

    model: torch.nn.Module
    tokenizer: Any
    name: str
    pretrained: str
    image_size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    resize_mode: str
    tau: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def embed_dim(self) -> int:
        """Width ``D`` of image and text features."""
        return int(self.model.visual.output_dim) if hasattr(self.model.visual, "output_dim") else self._text_dim()

    def _text_dim(self) -> int:
        return int(self.encode_text(["a photo."]).shape[-1])

    def describe(self) -> Dict[str, Any]:
        return {
            "model": self.name,
            "pretrained": self.pretrained,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
            "tau": self.tau,
        }

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] (or uint8 in [0, 255]) -> CLIP-normalised float."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, *, autocast: Optional[torch.dtype] = None) -> torch.Tensor:
        """L2-normalised image features.

        Args:
            images: ``(B, 3, H, W)`` at :attr:`image_size`, float RGB in [0, 1] or uint8.
            autocast: run the encoder under ``torch.autocast`` with this dtype (GPU speed).

        Returns:
            ``(B, D)`` float32, unit norm.
        """
        x = self.normalize(images.to(self.device, non_blocking=True))
        if autocast is not None:
            with torch.autocast(device_type=self.device.type, dtype=autocast):
                f = self.model.encode_image(x)
        else:
            f = self.model.encode_image(x)
        return F.normalize(f.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features ``(N, D)`` float32 of ``texts``."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def prompt_features(self, prompts: Sequence[Sequence[Prompt]]) -> torch.Tensor:
        """Pole features of several prompt ensembles, with one text-encoder pass.

        Args:
            prompts: ``K`` ensembles, each a non-empty list of :class:`Prompt`.

        Returns:
            ``(K, 2, D)`` float32: ``[:, 0]`` the positive pole, ``[:, 1]`` the negative one,
            each the L2-normalised mean of its prompts' L2-normalised features.
        """
        texts, owner = [], []
        for k, group in enumerate(prompts):
            if not group:
                raise ValueError(f"prompt ensemble {k} is empty")
            for p in group:
                texts.extend(p.texts())
                owner.append(k)
        feats = self.encode_text(texts)
        feats = feats.view(-1, 2, feats.shape[-1])
        out = torch.zeros(len(prompts), 2, feats.shape[-1], device=feats.device)
        out.index_add_(0, torch.tensor(owner, device=feats.device), feats)
        return F.normalize(out, dim=-1)

    def attribute_features(self, prompt_set: Mapping[str, Sequence[Prompt]]) -> torch.Tensor:
        """``(A, 2, D)`` pole features of a prompt set, attributes in :data:`ATTRIBUTES` order."""
        missing = [a for a in ATTRIBUTES if a not in prompt_set]
        if missing:
            raise ValueError(f"prompt set lacks attribute(s) {missing}")
        return self.prompt_features([prompt_set[a] for a in ATTRIBUTES])


def _resolve_pretrained(name: str, pretrained: Optional[str]) -> Tuple[Optional[str], Dict[str, Any]]:
    """(value for open_clip.create_model, extra kwargs); validates tags and files up front."""
    import open_clip

    if pretrained is None or str(pretrained).lower() in _NO_WEIGHTS:
        return None, {}
    pretrained = str(pretrained)
    tag_cfg = open_clip.pretrained.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        # OpenAI weights were trained with QuickGELU; building without it silently degrades them.
        return pretrained, {"force_quick_gelu": bool(tag_cfg.get("quick_gelu", False))}
    if Path(pretrained).is_file():
        return pretrained, {}
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"--clip-pretrained {pretrained!r} is neither a pretrained tag of {name!r} (known: {tags}) "
        f"nor an existing file; use 'none' for random weights"
    )


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
            into its cache), a local checkpoint file, or ``"none"`` / ``None`` for random
            weights.
        device: where the model runs.
        tau: softmax temperature; default the model's ``logit_scale.exp()``.
        init_seed: seed of the random initialisation (matters only without weights:
            every process and every resumed run builds the same random model).

    Returns:
        A :class:`ClipTeacher` in eval mode with frozen parameters.
    """
    import open_clip

    name = resolve_clip_model_name(str(model))
    if name != str(model):  # a config file: record where it is, whatever the working folder
        model = str(Path(model).resolve())
    schema = name.split(":", 1)[0] if name.startswith(("hf-hub:", "local-dir:")) else None
    # A schema name carries its own weights; open_clip ignores `pretrained` for it.
    weights, extra = (None, {}) if schema else _resolve_pretrained(name, pretrained)
    # Random weights must be the same in every rank and after a resume, so they come
    # from a fixed seed without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        clip = open_clip.create_model(name, pretrained=weights, device=device, **extra)
    clip.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
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


def pseudo_label_logits(features: torch.Tensor, pole_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(N, A, 2)`` of unit image features ``(N, D)`` with poles ``(A, 2, D)``."""
    return torch.einsum("nd,akd->nak", features.float(), pole_features.float().to(features.device))


def pseudo_labels(features: torch.Tensor, pole_features: torch.Tensor, tau: float) -> torch.Tensor:
    """``p_a = softmax(tau * [cos(f, t+), cos(f, t-)])[0]`` for every image and attribute.

    Args:
        features: ``(N, D)`` L2-normalised image features.
        pole_features: ``(A, 2, D)`` from :meth:`ClipTeacher.attribute_features`.
        tau: temperature (the CLIP logit scale).

    Returns:
        ``(N, A)`` float32 in [0, 1], quality-aligned (1 = the positive, desirable pole).
    """
    return torch.softmax(tau * pseudo_label_logits(features, pole_features), dim=-1)[..., 0]


def load_clip_image(path: PathLike, size: Tuple[int, int], resize_mode: str = "shortest", *, draft: bool = True):
    """Decode an image and apply CLIP's geometry: ``(3, H, W)`` uint8 at ``size``.

    Decoding is :func:`attiqa_loss.io.decode_image`, the reader of every other command:
    EXIF orientation is applied, 16-bit images are resized in float and rounded to 8 bits
    only at the end, grey/palette/alpha/CMYK become RGB, and an oversized file is an
    :class:`attiqa_loss.io.ImageTooLarge` error. For ordinary 8-bit RGB files the result
    is what it always was (Pillow's RGB conversion and bicubic resize on 8-bit data).

    ``"shortest"``: bicubic resize of the shorter side to the crop size, then a centre
    crop (what open_clip's evaluation transform does); ``"squash"``: resize to ``size``.
    With ``draft`` a large JPEG is decoded at a reduced DCT scale first (never below the
    target size), which is several times faster and visually the same at CLIP size.
    Raises ``OSError``/``ValueError`` for unreadable files.
    """
    from PIL import Image

    from attiqa_loss.io import decode_image

    th, tw = size
    im = decode_image(path, draft=((tw, th) if resize_mode == "squash" else (max(th, tw), max(th, tw))) if draft else None)
    w, h = im.size
    if resize_mode == "squash":
        im = im.resize((tw, th), Image.BICUBIC)
    else:
        short_target = min(th, tw)
        if w <= h:
            nw, nh = short_target, int(short_target * h / w)
        else:
            nw, nh = int(short_target * w / h), short_target
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BICUBIC)
        left = int(round((nw - tw) / 2.0))
        top = int(round((nh - th) / 2.0))
        if left < 0 or top < 0:
            raise ValueError(f"{path}: cannot centre-crop {nw}x{nh} to {tw}x{th}")
        im = im.crop((left, top, left + tw, top + th))
    return im.to_uint8()


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


def apply_clip_arguments(section: ClipSection, args) -> ClipSection:
    if getattr(args, "clip_model", None):
        section.model = args.clip_model
    if getattr(args, "clip_pretrained", None):
        section.pretrained = args.clip_pretrained
    return section
