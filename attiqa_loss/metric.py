"""``AttiqaMetric``: mean attribute scores over a validation loop, like a torchmetrics metric.

    >>> metric = AttiqaMetric().to(device)          # the embedded default model
    >>> for batch in loader:
    ...     metric.update(model(batch))              # (B, 3, H, W) in [0, 1]
    >>> metric.compute()                             # {"sharpness": tensor(0.61), ...}
    >>> metric.reset()

When torchmetrics is installed, :class:`AttiqaMetric` is a ``torchmetrics.Metric`` (it
works in ``MetricCollection`` and Lightning's ``self.log``, and torchmetrics keeps its
states in step across processes). Without torchmetrics it is a plain ``nn.Module`` with
the same ``update``/``compute``/``reset``/``forward`` methods, and ``compute`` sums the
states over all processes with ``torch.distributed.all_reduce`` when a process group is
initialised. Either way every process must call ``compute`` (a collective operation).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from .network import AttiqaNet

__all__ = ["AttiqaMetric", "TORCHMETRICS_AVAILABLE"]

try:
    from torchmetrics import Metric as _MetricBase

    TORCHMETRICS_AVAILABLE = True
except ImportError:
    _MetricBase = None
    TORCHMETRICS_AVAILABLE = False


def _synced(compute: Callable[..., Any]) -> Callable[..., Any]:
    """``compute`` run on the states all-reduced over the process group (when there is one)."""

    @functools.wraps(compute)
    def wrapped(self: "_PlainMetric") -> Any:
        if not self._distributed():
            return compute(self)
        local = {name: getattr(self, name) for name in self._defaults}
        try:
            for name, value in local.items():
                total = value.clone()
                torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=self.process_group)
                setattr(self, name, total)
            return compute(self)
        finally:
            for name, value in local.items():
                setattr(self, name, value)

    return wrapped


class _PlainMetric(nn.Module):
    """The part of ``torchmetrics.Metric`` that :class:`AttiqaMetric` uses, for installs
    without torchmetrics: summed tensor states, ``reset``, ``forward`` (update and return
    the batch's value) and a ``compute`` that all-reduces the states across processes.

    Args:
        process_group: the ``torch.distributed`` group to reduce over (default: the world).
        sync_on_compute: reduce across processes in ``compute`` (default True).
    """

    def __init__(self, *, process_group: Optional[Any] = None, sync_on_compute: bool = True) -> None:
        super().__init__()
        self.process_group = process_group
        self.sync_on_compute = sync_on_compute
        self._defaults: Dict[str, torch.Tensor] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass's compute() is wrapped once, at class creation, so that it sees the
        # states summed over processes; _compute_local keeps the unsynced original.
        super().__init_subclass__(**kwargs)
        if "compute" in cls.__dict__:
            cls._compute_local = cls.__dict__["compute"]
            cls.compute = _synced(cls.__dict__["compute"])

    def add_state(self, name: str, default: torch.Tensor, dist_reduce_fx: str = "sum", persistent: bool = False) -> None:
        if dist_reduce_fx != "sum":
            raise ValueError(f"only dist_reduce_fx='sum' is supported without torchmetrics, got {dist_reduce_fx!r}")
        self._defaults[name] = default.detach().clone()
        self.register_buffer(name, default.detach().clone(), persistent=persistent)

    def reset(self) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, default.clone().to(getattr(self, name)))

    def _distributed(self) -> bool:
        dist = torch.distributed
        return (
            self.sync_on_compute
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Update with this batch and return the metric on this batch alone (not synced)."""
        saved = {name: getattr(self, name) for name in self._defaults}
        self.reset()
        self.update(*args, **kwargs)
        batch_value = self._compute_local()
        for name, value in saved.items():
            setattr(self, name, value + getattr(self, name))
        return batch_value

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


_Base = _MetricBase if TORCHMETRICS_AVAILABLE else _PlainMetric


class AttiqaMetric(_Base):  # type: ignore[misc, valid-type]
    """Mean attribute scores of the images seen since the last ``reset``, over batches and
    (under ``torch.distributed``) over all processes.

    Args:
        net: the quality network; default: ``load_attiqa(checkpoint)``. It is kept in eval
            mode and run without gradients; its weights are not changed.
        checkpoint: a ``.safetensors`` model used when ``net`` is None (None: the model
            embedded in the package).
        **kwargs: passed to ``torchmetrics.Metric`` (e.g. ``process_group``,
            ``sync_on_compute``, ``dist_sync_on_step``); without torchmetrics only
            ``process_group`` and ``sync_on_compute`` are accepted.

    ``update(images)``: ``images`` is a ``(B, 3, H, W)`` float RGB batch in [0, 1], H, W >= 32
    (moved to the network's device); adds the batch's per-attribute score sums and count.

    ``compute()``: ``{attribute: 0-dim float tensor}`` in ``ATTRIBUTES`` order (sharpness,
    contrast, brightness, colorfulness, noisiness): the mean score over every image
    passed to ``update`` on every process, in [0, 1], quality-aligned (1 = sharp, high
    contrast, well lit, colourful, noise-free). Called before any image was passed to
    ``update`` (since the last ``reset``, on every process together) it raises a
    ``RuntimeError`` saying so: there is no mean of nothing, and a NaN would pass
    unnoticed into logs and checkpoint selection.

    ``forward(images)`` (calling the metric) updates and returns the same dict for that
    batch alone; ``reset()`` starts over. States: ``score_sum`` ``(5,)`` and ``count``
    ``()``, both summed across processes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, net: Optional[AttiqaNet] = None, *, checkpoint: Union[None, str, os.PathLike] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if net is None:
            from .loss import load_attiqa

            net = load_attiqa(checkpoint)
        if not isinstance(net, AttiqaNet):
            raise TypeError(f"net must be an AttiqaNet, got {type(net).__name__}")
        self.net = net.eval()
        self.attributes = tuple(net.attributes)
        self.add_state("score_sum", default=torch.zeros(len(self.attributes)), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def train(self, mode: bool = True) -> "AttiqaMetric":
        super().train(mode)
        self.net.eval()  # batch-norm statistics must not drift while scoring
        return self

    def update(self, images: torch.Tensor) -> None:
        """Add a ``(B, 3, H, W)`` batch in [0, 1] (H, W >= 32) to the running sums."""
        device = next(self.net.parameters()).device
        with torch.no_grad():
            scores = self.net(images.to(device)).float()
        self.score_sum = self.score_sum + scores.sum(0).to(self.score_sum)
        self.count = self.count + scores.shape[0]

    def compute(self) -> Dict[str, torch.Tensor]:
        """Mean score per attribute, ``{name: 0-dim tensor}``.

        Raises:
            RuntimeError: no image was passed to ``update`` since the last ``reset``
                (on any process).
        """
        if float(self.count) == 0:
            raise RuntimeError("AttiqaMetric.compute() was called before any image was passed to update() "
                               "(since the last reset()): there is no mean score to return; call "
                               "update(images) first")
        means = self.score_sum / self.count
        return {name: means[i] for i, name in enumerate(self.attributes)}
