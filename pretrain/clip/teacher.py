"""The built CLIP teacher (:class:`ClipTeacher`): encoders, prompt pole features, pseudo-labels, image geometry.

:class:`ClipTeacher` wraps an open_clip model in eval mode with its normalisation and
gives L2-normalised image and text features and the pole features of prompt ensembles
(each pole the L2-normalised mean of its prompts' L2-normalised features);
:func:`pseudo_labels` turns image and pole features into quality-aligned labels
``p_a = softmax(tau * [cos(f, t+), cos(f, t-)])[0]``; :func:`load_clip_image` decodes a
file and applies CLIP's resize and centre crop. How a teacher is built (model names,
config files, weights): :mod:`pretrain.clip.model`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from attiqa_loss.attributes import ATTRIBUTES

from .prompts import Prompt

__all__ = ["ClipTeacher", "pseudo_labels", "pseudo_label_logits", "load_clip_image"]

PathLike = Union[str, os.PathLike]


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
