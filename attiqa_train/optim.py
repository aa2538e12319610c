"""Optimiser, learning-rate schedule and precision, the same for every trainer.

- :func:`adamw`: AdamW with weight decay on weight matrices and convolution kernels only.
  Decay pulls a weight towards zero; on biases and normalisation gains/shifts (the
  parameters with at most one dimension) it only removes freedom the network needs
  (a bias has no "size" to regularise), so they get none. Each trainer may split its
  parameters into groups with their own learning rates (the MOS fine-tuning does);
  the rule applies inside every group.
- :func:`warmup_cosine` / :func:`warmup_cosine_scheduler`: linear warmup, then cosine
  decay to ``min_ratio`` of the base rate. A warmup at least as long as the run (a short
  trial of a long recipe: ``train.steps=40`` with ``train.warmup_steps: 500``) would keep
  the rate far below its base to the end, so the run would barely move the weights:
  :func:`fit_warmup` shortens it to :data:`SHORT_RUN_WARMUP` of the steps and says so on
  stderr. A warmup shorter than the run is used as given.
- :func:`use_bf16` / :func:`autocast`: the precision choice (bfloat16 autocast on CUDA
  where supported, never on CPU unless asked).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["adamw", "SHORT_RUN_WARMUP", "fit_warmup", "warmup_cosine", "warmup_cosine_scheduler", "use_bf16",
           "autocast"]

#: The warmup of a run no longer than its configured warmup, as a fraction of its steps.
SHORT_RUN_WARMUP = 0.1

Precision = Union[bool, str]


def _split_decay(params: Iterable[nn.Parameter]) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    decay, no_decay = [], []
    for p in params:
        (decay if p.ndim > 1 else no_decay).append(p)
    return decay, no_decay


def adamw(groups: Union[Iterable[nn.Parameter], Sequence[Mapping[str, Any]]], *, lr: float, weight_decay: float,
          betas: Tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over ``groups``: an iterable of parameters, or dicts ``{"params": ..., **options}``
    (e.g. their own ``lr``). Every group is split in two: parameters with more than one
    dimension decay by ``weight_decay``, the others (biases, norm layers) by 0.

    The decaying half of a group comes first, then the rest, in the order given (so one
    plain group gives ``[decay, no decay]``)."""
    if isinstance(groups, (list, tuple)) and groups and isinstance(groups[0], Mapping):
        specs = [dict(g) for g in groups]
    else:
        specs = [{"params": groups}]
    param_groups: List[Dict[str, Any]] = []
    for spec in specs:
        decay, no_decay = _split_decay(spec.pop("params"))
        param_groups.append({"params": decay, "weight_decay": weight_decay, **spec})
        param_groups.append({"params": no_decay, "weight_decay": 0.0, **spec})
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas)


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier of step ``step``: linear warmup over ``warmup`` steps, then cosine
    decay over the remaining ``total - warmup`` steps down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def fit_warmup(warmup: int, total: int, *, key: str = "train.warmup_steps", total_key: str = "train.steps",
               say: bool = True) -> int:
    """The warmup a run of ``total`` steps uses: ``warmup`` when it is shorter than the
    run; otherwise ``int(SHORT_RUN_WARMUP * total)`` steps, said in one line on stderr
    (when ``say``) naming ``key`` with the configured and the used value and ``total_key``.
    (A warmup as long as the run would end it before the rate reaches its base.)"""
    if warmup < total or warmup <= 0:
        return warmup
    fitted = int(SHORT_RUN_WARMUP * total)
    if say:
        instead = f"warming up over {fitted} steps instead" if fitted else "no warmup instead"
        print(f"{key}={warmup} is not shorter than {total_key}={total}: {instead} ({SHORT_RUN_WARMUP:.0%} of the "
              "run), so the learning rate reaches its base value", file=sys.stderr)
    return fitted


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, *, warmup: int, total: int,
                            min_ratio: float = 0.0, key: str = "train.warmup_steps", total_key: str = "train.steps",
                            say: bool = True) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` of :func:`warmup_cosine` (stepped once per optimiser step), with the
    warmup of :func:`fit_warmup` (``key``, ``total_key`` and ``say`` are its arguments:
    the config keys its message names, and whether this process says it - rank 0)."""
    warmup = fit_warmup(warmup, total, key=key, total_key=total_key, say=say)
    schedule = functools.partial(warmup_cosine, warmup=warmup, total=total, min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def use_bf16(precision: Precision, device: torch.device) -> bool:
    """Whether to run the forward pass under bfloat16 autocast.

    ``precision``: ``"bf16"`` = always; ``"off"`` / ``False`` = never; ``"auto"`` /
    ``True`` = on CUDA devices that support bfloat16, never on CPU (where it is slower
    than float32 on most machines)."""
    if precision in ("off", False):
        return False
    if precision == "bf16":
        return True
    if precision in ("auto", True):
        return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    raise ValueError(f"precision must be 'auto', 'bf16', 'off', true or false, got {precision!r}")


def autocast(enabled: bool, device: torch.device):
    """``torch.autocast(device.type, bfloat16)`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
