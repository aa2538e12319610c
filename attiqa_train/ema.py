"""Exponential moving average of model weights (the weights that get exported)."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """Float32 shadow copy of a model's floating-point state, updated after each step.

    The effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so a short run's average is not dominated by the random initialisation.
    Has ``state_dict``/``load_state_dict`` for :func:`attiqa_train.state.save_state`.

    Args:
        model: the model to track (its current weights start the average).
        decay: the long-run decay in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same architecture)."""
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v.to(state[k].dtype))

    def state_dict(self) -> Dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise KeyError(f"EMA state lacks {missing}")
        for k in self.shadow:
            self.shadow[k] = state["shadow"][k].float().to(self.shadow[k].device).clone()
        self.updates = int(state["updates"])
