"""``AttiqaLoss``: the frozen attribute-aware IQA network as a training loss (docs/method.md, section 8)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .attributes import ATTRIBUTES, validate_attribute_mapping
from .checkpoint import load_checkpoint
from .network import AttiqaNet
from .checks import MIN_SIZE, check_images

__all__ = [
    "AttiqaLoss",
    "attiqa_loss",
    "attribute_distance",
    "load_attiqa",
    "default_checkpoint_path",
    "random_view",
]

CheckpointLike = Union[None, str, os.PathLike, AttiqaNet]
_REDUCTIONS = ("mean", "sum", "none")
DEFAULT_CHECKPOINT_NAME = "attiqa_default.safetensors"


def default_checkpoint_path() -> Path:
    """Path of the model embedded in the package (may not exist in a development tree)."""
    return Path(str(resources.files("attiqa_loss") / "weights" / DEFAULT_CHECKPOINT_NAME))


def load_attiqa(checkpoint: Union[None, str, os.PathLike] = None, *, map_location="cpu") -> AttiqaNet:
    """Load the attribute-aware IQA network.

    Args:
        checkpoint: a ``.safetensors`` file written by :func:`attiqa_loss.save_checkpoint`,
            or ``None`` for the model embedded in the package.
        map_location: device to put the network on.

    Returns:
        An :class:`AttiqaNet` in eval mode mapping ``(B, 3, H, W)`` float RGB in [0, 1]
        (H, W >= 32) to ``(B, 5)`` scores in [0, 1], quality-aligned (1 = sharp, high
        contrast, well lit, colourful, noise-free). Its parameters still require grad so
        it can be fine-tuned; :class:`AttiqaLoss` freezes them.
    """
    if checkpoint is None:
        path = default_checkpoint_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"this install has no embedded default model ({path} is missing); pass "
                "checkpoint=PATH to a model trained with `attiqa-pretrain train`"
            )
        checkpoint = path
    return load_checkpoint(checkpoint, map_location=map_location)


def _as_network(checkpoint: CheckpointLike) -> AttiqaNet:
    if isinstance(checkpoint, AttiqaNet):
        return checkpoint
    if checkpoint is None or isinstance(checkpoint, (str, os.PathLike)):
        return load_attiqa(checkpoint)
    raise TypeError(f"checkpoint must be None, a path or an AttiqaNet, got {type(checkpoint).__name__}")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    # Half/bfloat16 scores (autocast) are summed in float32; float64 stays float64 so
    # double-precision checks (gradcheck) are not silently rounded to float32.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def attribute_distance(
    scores: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """``sum_a w_a * |s_a - t_a| / sum_a w_a`` per image, then reduced.

    Shape:
        - scores: ``(B, A)``; weights, targets: ``(A,)``.
        - Output: scalar, or ``(B,)`` with ``reduction="none"``.
    """
    _check_reduction(reduction)
    scores = _at_least_float32(scores)
    per_image = ((scores - targets).abs() * weights).sum(dim=1) / weights.sum()
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def attiqa_loss(
    images: torch.Tensor,
    net: AttiqaNet,
    weights: Optional[Mapping[str, float]] = None,
    targets: Optional[Mapping[str, float]] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional form of :class:`AttiqaLoss` with a given network (not frozen here).

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1], H, W >= 32.
        net: an :class:`AttiqaNet`, used as it is (its mode and ``requires_grad`` untouched).
        weights, targets, reduction: as in :class:`AttiqaLoss`.

    Returns:
        Scalar loss (``(B,)`` for ``reduction="none"``); lower is better.
    """
    w = _weights_tensor(weights)
    t = _targets_tensor(targets)
    scores = net(images)
    return attribute_distance(scores, w.to(scores.device), t.to(scores.device), reduction)


def _weights_tensor(weights: Optional[Mapping[str, float]]) -> torch.Tensor:
    w = validate_attribute_mapping(weights, "weights", low=0.0, high=None, default=1.0)
    if sum(w) <= 0:
        raise ValueError(f"at least one weight must be positive, got weights={dict(zip(ATTRIBUTES, w))}")
    return torch.tensor(w, dtype=torch.float32)


def _targets_tensor(targets: Optional[Mapping[str, float]]) -> torch.Tensor:
    return torch.tensor(
        validate_attribute_mapping(targets, "targets", low=0.0, high=1.0, default=1.0), dtype=torch.float32
    )


def random_view(
    images: torch.Tensor, max_shift: int = 8, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """One random attribute-preserving view of a batch (the same view for every image).

    A random element of the eight flips and transposes of the square, then a window of
    ``(H - m, W - m)`` at a random offset in ``[0, m]``, where ``m = max_shift`` (less for
    images smaller than ``MIN_SIZE + max_shift``, so the view is never below ``MIN_SIZE``).
    Sharpness, contrast, brightness, colourfulness and noisiness do not depend on
    orientation or on where the frame starts, so a quality score should not either.
    Randomness comes from ``generator`` (the global CPU generator by default).

    Shape: ``(B, C, H, W)`` -> ``(B, C, H - m, W - m)``, or ``(B, C, W - m, H - m)`` when
    the view is transposed.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    flip_w, flip_h, transpose = (bool(b) for b in torch.randint(2, (3,), generator=generator))
    m = max(0, min(max_shift, min(images.shape[-2:]) - MIN_SIZE))
    dy, dx = (int(v) for v in torch.randint(m + 1, (2,), generator=generator))
    h, w = images.shape[-2:]
    x = images[..., dy : h - m + dy, dx : w - m + dx]
    if flip_w:
        x = x.flip(-1)
    if flip_h:
        x = x.flip(-2)
    return x.transpose(-1, -2) if transpose else x


class AttiqaLoss(nn.Module):
    """Attribute-aware no-reference quality loss with per-attribute weights and targets.

    ``loss = sum_a w_a * |s_a(x) - t_a| / sum_a w_a`` where ``s_a`` are the frozen
    network's quality-aligned scores in [0, 1] (1 = sharp, high contrast, well lit,
    colourful, noise-free). Lower is better; with every target at 1 the loss pushes
    each attribute towards its desirable pole, a target below 1 (``brightness=0.7``)
    asks for "enough, not more".

    The network is frozen: its parameters never require grad, the module stays in eval
    mode even when a parent calls ``.train()``, gradients flow to the input image, and
    the frozen weights stay out of a parent's ``state_dict`` unless
    ``include_in_state_dict=True``. ``.to()``/``.cuda()``/``.half()`` move it as usual.

    Args:
        weights: ``{attribute: w >= 0}``; attributes left out keep weight 1, a zero weight
            removes an attribute. At least one weight must be positive.
        targets: ``{attribute: t in [0, 1]}``; attributes left out keep target 1.
        checkpoint: ``None`` (the model embedded in the package), a ``.safetensors`` path,
            or an :class:`AttiqaNet` instance (it is frozen in place).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        include_in_state_dict: register the network as an ordinary submodule so its
            weights are saved and loaded with the parent (a parent's ``requires_grad_``
            then reaches them; the loss freezes them again before every call).
        check_inputs: validate every input batch (shape, dtype, range, finiteness).
        views: ``0`` (default) scores the images as they are. ``n >= 1`` makes
            :meth:`forward` average the scores of ``n`` fresh :func:`random_view` s of
            the batch (flips, transposes, shifts of up to 8 px), in the spirit of E-LPIPS
            (Kettunen et al. 2019): an optimiser then cannot raise the score with a
            pixel pattern tuned to one fixed alignment of the network, and has to change
            the attribute itself. Costs ``n`` network passes; :meth:`scores` stays
            deterministic. Random draws use the global CPU generator (seed it with
            ``torch.manual_seed`` for reproducible runs).

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1], any ``H, W >= 32``, any device, any
          memory format; works under ``torch.autocast``.
        - Output: scalar, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> loss_fn = AttiqaLoss(weights={"noisiness": 2.0}, targets={"brightness": 0.7})
        >>> out = enhancer(low_light)                     # (B, 3, H, W) in [0, 1]
        >>> loss = l1(out, target) + 0.1 * loss_fn(out)
        >>> loss_fn.scores(out)["brightness"]             # (B,), higher is better
    """

    higher_is_better = False
    is_differentiable = True

    def __init__(
        self,
        weights: Optional[Mapping[str, float]] = None,
        targets: Optional[Mapping[str, float]] = None,
        checkpoint: CheckpointLike = None,
        reduction: str = "mean",
        *,
        include_in_state_dict: bool = False,
        check_inputs: bool = True,
        views: int = 0,
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if isinstance(views, bool) or not isinstance(views, int) or views < 0:
            raise ValueError(f"views must be an integer >= 0, got {views!r}")
        self.views = views
        self.reduction = reduction
        self.check_inputs = check_inputs
        self.include_in_state_dict = include_in_state_dict
        self.register_buffer("weights", _weights_tensor(weights), persistent=False)
        self.register_buffer("targets", _targets_tensor(targets), persistent=False)
        net = _as_network(checkpoint)
        net.eval()
        net.requires_grad_(False)
        if include_in_state_dict:
            self.net = net
        else:
            # Not a registered submodule: invisible to state_dict(), parameters() and a
            # parent's strict load_state_dict(); _apply() below still moves it.
            object.__setattr__(self, "_frozen_net", net)
        super().train(False)

    @property
    def network(self) -> AttiqaNet:
        """The frozen :class:`AttiqaNet`."""
        return self.net if self.include_in_state_dict else self._frozen_net

    @property
    def attributes(self):
        return self.network.attributes

    def _apply(self, fn: Callable, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if not self.include_in_state_dict:
            self._frozen_net._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> "AttiqaLoss":
        """No-op: the loss stays in eval mode (BatchNorm statistics and dropout frozen)."""
        return super().train(False)

    def _scores(self, images: torch.Tensor, views: int = 0) -> torch.Tensor:
        if self.check_inputs:
            check_images(images)
        if self.include_in_state_dict:
            # A registered submodule is reached by a parent's requires_grad_(True): freeze
            # it again before every use, so no gradient is ever computed for its weights.
            for p in self.net.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
        if views == 0:
            return self.network(images, check=False)
        return torch.stack([self.network(random_view(images), check=False) for _ in range(views)]).mean(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Loss of a ``(B, 3, H, W)`` batch in [0, 1]; scalar, or ``(B,)`` for ``reduction="none"``.

        With ``views > 0`` the scores are the mean over that many fresh random views."""
        return attribute_distance(self._scores(images, self.views), self.weights, self.targets, self.reduction)

    def scores(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Higher-is-better attribute scores ``{name: (B,)}`` in [0, 1] (differentiable)."""
        s = _at_least_float32(self._scores(images))
        return {name: s[:, i] for i, name in enumerate(self.attributes)}

    def extra_repr(self) -> str:
        w = {n: round(float(v), 4) for n, v in zip(self.attributes, self.weights)}
        t = {n: round(float(v), 4) for n, v in zip(self.attributes, self.targets)}
        views = f", views={self.views}" if self.views else ""
        return f"backbone={self.network.backbone_name!r}, weights={w}, targets={t}, reduction={self.reduction!r}{views}"
