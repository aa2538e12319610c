"""The attribute-aware IQA network: a timm backbone with one sigmoid head per attribute."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import timm
import torch
from torch import nn

from .attributes import ATTRIBUTES
from .checks import check_images
from .measures.simple import luminance

__all__ = ["AttiqaNet", "create_attiqa_net", "tone_statistics", "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_BACKBONE",
           "CHROMA_SCALE", "TONE_FLOOR", "TONE_STATS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The fast small backbone the shipped default model uses.
DEFAULT_BACKBONE = "resnet10t"
#: ``normalize_tone`` (luminance: Rec. 601, :func:`attiqa_loss.measures.luminance`): the
#: contrast floor, the fixed scale of the chroma channels and the number of per-image
#: statistics handed to the heads (mean luminance, luminance contrast, log of their ratio).
TONE_FLOOR = 0.05
CHROMA_SCALE = 0.226
TONE_STATS = 3


class CeilAvgPool2d(nn.AvgPool2d):
    """2x2 average pooling that rounds odd sizes up (``ceil_mode``), as the strided convs
    and the ``avg_down`` shortcuts it sits beside do: timm builds its ``aa_layer`` as
    ``aa_layer(stride)``, and a plain ``AvgPool2d`` would drop the last row of an odd size."""

    def __init__(self, kernel_size: int = 2, stride: Optional[int] = None) -> None:
        super().__init__(kernel_size, stride, ceil_mode=True, count_include_pad=False)


#: ``backbone_kwargs["aa_layer"]`` names (JSON-safe, as stored in checkpoints) -> layer classes
AA_LAYERS = {"avg": CeilAvgPool2d, "blur": timm.layers.BlurPool2d}


def _timm_kwargs(backbone_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """``backbone_kwargs`` as :func:`timm.create_model` takes them: an ``aa_layer`` name
    becomes its class (timm's ResNet stem needs a class, a checkpoint stores the name)."""
    kwargs = dict(backbone_kwargs)
    if isinstance(kwargs.get("aa_layer"), str):
        if kwargs["aa_layer"] not in AA_LAYERS:
            raise ValueError(f"backbone_kwargs aa_layer must be one of {sorted(AA_LAYERS)}, got {kwargs['aa_layer']!r}")
        kwargs["aa_layer"] = AA_LAYERS[kwargs["aa_layer"]]
    return kwargs


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class AttiqaNet(nn.Module):
    """Attribute-aware no-reference IQA network (docs/method.md, section 5).

    A fully convolutional timm backbone with global average pooling, followed by one
    linear head per attribute and a sigmoid. Input normalisation happens inside.

    Args:
        backbone: timm model name (fully convolutional, e.g. ``"resnet10t"``, ``"resnet50"``).
        attributes: attribute names in output order (default :data:`ATTRIBUTES`).
        mean, std: per-channel normalisation applied to the [0, 1] input.
        pretrained: load the backbone's pretrained weights through timm (ImageNet). Needs
            network access or ``pretrained_cfg_overlay={"file": "/path/weights.safetensors"}``.
        pretrained_cfg_overlay: passed to :func:`timm.create_model`, e.g. a local weight file
            (``{"file": path}``: a safetensors file, or a PyTorch file of tensors only, read with
            ``torch.load(weights_only=True)`` and handed to timm as safetensors, so that
            nothing in it is ever unpickled as code).
        backbone_kwargs: extra keyword arguments for :func:`timm.create_model`.
        normalize_tone: the backbone sees each image's luminance ``Y`` (Rec. 601) with its
            mean removed and divided by its contrast, ``sqrt(var(Y) + TONE_FLOOR**2)``,
            plus its chroma ``x - Y`` as it is (over :data:`CHROMA_SCALE`): what it finds
            in the luminance (detail, noise, texture) cannot depend on exposure or global
            contrast, while colour keeps its absolute size. Mean luminance, luminance
            contrast and the log of their ratio (:func:`tone_statistics`) are appended to
            the pooled features for the heads. Off: the input is only normalised by
            ``mean`` and ``std``.
        centre_chroma: with ``normalize_tone``, the chroma the backbone sees has its
            per-image mean removed as well: a uniform tint (a colour cast) reaches
            neither the backbone nor the heads, so no score can be raised by painting
            one, and colourfulness reads the spread of the colours, not their average.

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1], ``H, W >= 32``.
        - Output: ``(B, A)`` scores in [0, 1], quality-aligned (1 = sharp, high contrast,
          well lit, colourful, noise-free), columns in ``attributes`` order.

    Example:
        >>> net = create_attiqa_net("test_resnet")
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        attributes: Sequence[str] = ATTRIBUTES,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        pretrained: bool = False,
        pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
        backbone_kwargs: Optional[Mapping[str, Any]] = None,
        normalize_tone: bool = False,
        centre_chroma: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must have 3 entries with std > 0, got mean={mean}, std={std}")
        if centre_chroma and not normalize_tone:
            raise ValueError("centre_chroma needs normalize_tone (it centres the chroma that tone normalisation "
                             "hands the backbone), got normalize_tone=False")
        self.backbone_name = backbone
        self.attributes = tuple(attributes)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.normalize_tone = bool(normalize_tone)
        self.centre_chroma = bool(centre_chroma)
        overlay = dict(pretrained_cfg_overlay) if pretrained_cfg_overlay else None
        weights = overlay.get("file") if overlay and pretrained else None
        with contextlib.ExitStack() as stack:
            if weights:  # timm reads the user's file only as safetensors: it never unpickles it, whatever its version
                from .weights_file import safetensors_copy

                overlay["file"] = str(stack.enter_context(
                    safetensors_copy(weights, what="the backbone's pretrained weights")))
            self.backbone = timm.create_model(
                backbone,
                pretrained=pretrained,
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                global_pool="avg",
                **_timm_kwargs(self.backbone_kwargs),
            )
        width = self.num_features
        self.heads = nn.ModuleDict({name: nn.Linear(width, 1) for name in self.attributes})
        # Normalisation comes from checkpoint metadata, so it is not part of the state dict.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def num_features(self) -> int:
        """Width of the pooled feature vector (with ``normalize_tone``, the backbone's
        width plus :data:`TONE_STATS`)."""
        return self.backbone.num_features + (TONE_STATS if self.normalize_tone else 0)

    def config(self) -> Dict[str, Any]:
        """The constructor arguments needed to rebuild this network (stored in checkpoints)."""
        return {
            "backbone": self.backbone_name,
            "attributes": list(self.attributes),
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
            "backbone_kwargs": self.backbone_kwargs,
            "normalize_tone": self.normalize_tone,
            "centre_chroma": self.centre_chroma,
        }

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features. ``(B, 3, H, W)`` in [0, 1] -> ``(B, C)``; no input checks.

        Outside autocast, images of another floating dtype than the network's (half,
        bfloat16, double) are computed in the network's dtype; gradients still reach
        the input in its own dtype. Under autocast the input is passed on as it is."""
        dtype = self.heads[self.attributes[0]].weight.dtype
        if images.dtype != dtype and not _autocast_enabled(images.device.type):
            images = images.to(dtype)
        if not self.normalize_tone:
            return self.backbone((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))
        # The statistics in float32 (a bf16 variance would be coarse); the backbone's input
        # goes back to the images' dtype, so autocast and half inputs behave as without.
        backbone_input, stats = _tone_split(images.float(), centre_chroma=self.centre_chroma)
        return torch.cat([self.backbone(backbone_input.to(images.dtype)), stats.to(images.dtype)], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Attribute logits. ``(B, C)`` -> ``(B, A)`` (before the sigmoid)."""
        return torch.cat([head(features) for head in self.heads.values()], dim=1)

    def forward(self, images: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """Scores in [0, 1]. ``(B, 3, H, W)`` in [0, 1] -> ``(B, A)``; see the class docstring."""
        if check:
            check_images(images)
        return torch.sigmoid(self.forward_head(self.forward_features(images)))


def _floored_std(centred: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean(centred**2) + TONE_FLOOR**2)`` over H, W: ``(B, C, H, W)`` -> ``(B, C, 1, 1)``.
    The floor keeps a flat field's gradient finite and a faint pattern on it faint."""
    return (centred.square().mean((2, 3), keepdim=True) + TONE_FLOOR ** 2).sqrt()


def _tone_split(images: torch.Tensor, *, centre_chroma: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The backbone's input and the heads' statistics, from one luminance pass.

    Input: normalised luminance (in every channel) plus the absolute chroma over
    :data:`CHROMA_SCALE` (the weighted channel sum is the normalised luminance, the
    channel differences the chroma). Statistics: ``(m - 0.45) / CHROMA_SCALE``,
    ``c / CHROMA_SCALE`` and ``log(c / (m + TONE_FLOOR))`` with ``m`` the mean luminance
    and ``c`` its floored contrast (the ratio hardly changes when an exposure scales the
    image; the floor is the difference). ``centre_chroma``: the chroma minus its mean over
    the image (a uniform tint leaves the input unchanged).

    Shape: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``, ``(B, 3)``."""
    y = luminance(images)
    m = y.mean((2, 3), keepdim=True)
    c = _floored_std(y - m)
    stats = torch.cat([(m - 0.45) / CHROMA_SCALE, c / CHROMA_SCALE, (c / (m + TONE_FLOOR)).log()], dim=1).flatten(1)
    chroma = images - y
    if centre_chroma:
        chroma = chroma - chroma.mean((2, 3), keepdim=True)
    return (y - m) / c + chroma / CHROMA_SCALE, stats


def tone_statistics(images: torch.Tensor) -> torch.Tensor:
    """The three per-image numbers a ``normalize_tone`` network hands its heads (see
    :func:`_tone_split`). ``(B, 3, H, W)`` -> ``(B, 3)``."""
    return _tone_split(images)[1]


def create_attiqa_net(backbone: str = DEFAULT_BACKBONE, **kwargs: Any) -> AttiqaNet:
    """Build a fresh :class:`AttiqaNet` (random heads; backbone random unless ``pretrained``)."""
    return AttiqaNet(backbone, **kwargs)
