"""Resumable training state: model, optimiser, scheduler, EMA and step, written atomically.

Randomness in the training loops is derived from ``(seed, step, rank)``, so resuming at
step ``k`` replays exactly what an uninterrupted run does from step ``k`` on: no RNG
state needs saving. Loading uses ``torch.load(weights_only=True)`` (nothing arbitrary
is unpickled).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from attiqa_loss.io import atomic_write

__all__ = ["save_state", "load_state", "step_generator"]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, rank)``: the randomness of one step."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63 - 1))
    return g


def save_state(path: Union[str, os.PathLike], *, step: int, **objects: Any) -> None:
    """Save ``{name: obj.state_dict() or plain value}`` plus ``step`` atomically (temp file + rename)."""
    payload: Dict[str, Any] = {"step": int(step)}
    for name, obj in objects.items():
        if obj is None:
            continue
        payload[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_state(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu", **objects: Any) -> int:
    """Restore every object named in ``objects`` from ``path``; return the saved step.

    Raises ``KeyError`` naming an object that the file does not hold.
    """
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    for name, obj in objects.items():
        if obj is None:
            continue
        if name not in payload:
            raise KeyError(f"{path} holds no state for {name!r} (it has {sorted(payload)})")
        obj.load_state_dict(payload[name])
    return int(payload["step"])
