"""Resumable training state (``state.pt``): model, optimiser, scheduler, EMA and step,
written atomically.

Vocabulary (docs/checkpoints.md): the *state* is what ``--resume`` continues from; a
*checkpoint* is the exported ``.safetensors`` weights a run ends with. Randomness in the
training loops comes from :func:`attiqa_train.sampling.step_generator`, so resuming at
step ``k`` replays exactly what an uninterrupted run does from step ``k`` on: no RNG
state needs saving. Loading uses ``torch.load(weights_only=True)`` (nothing arbitrary
is unpickled).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import torch

from attiqa_loss.io import atomic_write

__all__ = ["STATE_NAME", "StateError", "save_state", "load_state"]

#: The resumable state's file name in a run folder (every trainer).
STATE_NAME = "state.pt"


class StateError(ValueError):
    """A training state file is unreadable (truncated, corrupt, not a state file) or does
    not fit the run that resumes from it; the message is one line naming the file."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _refusal(exc: BaseException) -> str:
    """``"; WeightsUnpickler: <what it refused>"`` from torch's weights-only error, or ""."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker not in text:
        return ""
    detail = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
    detail = " ".join(detail.split()).split(". ")[0].rstrip(".")  # the refusal, not torch's advice to lift it
    return f"; WeightsUnpickler: {detail[:200]}" if detail else ""


def save_state(path: Union[str, os.PathLike], *, step: int, **objects: Any) -> None:
    """Save ``{name: obj.state_dict() or plain value}`` plus ``step`` atomically (temp file + rename).

    The state is serialised in memory first and its bytes written with
    :func:`attiqa_loss.io.atomic_write`: a write that fails (a full disk) raises an
    ``OSError`` naming ``path``, where ``torch.save`` writing into the file itself would
    raise ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos ...``."""
    payload: Dict[str, Any] = {"step": int(step)}
    for name, obj in objects.items():
        if obj is None:
            continue
        payload[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()
    try:
        with atomic_write(path) as f:
            f.write(data)
    finally:
        data.release()


def load_state(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu", **objects: Any) -> int:
    """Restore every object named in ``objects`` from ``path``; return the saved step.

    Raises:
        FileNotFoundError: no file at ``path``.
        StateError: (a ``ValueError``) the file is truncated, corrupt or not a state
            file, lacks the state of an object named in ``objects`` or its step, or holds
            a state that does not fit the object; one line naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        # torch warns (two lines) about a pickle protocol or a TorchScript archive it then
        # refuses anyway: the one-line StateError below is the whole message.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise StateError(f"{path} is not a readable training state (truncated or corrupt?): "
                             f"{_first_line(exc)}") from exc
        raise StateError(f"{path} is not a readable training state: torch.load(weights_only=True) refused it (it "
                         "holds something other than tensors and plain data, which could run code, or is no state "
                         f"file){_refusal(exc)}") from exc
    except Exception as exc:  # zip/pickle/EOF errors of a truncated or foreign file
        raise StateError(f"{path} is not a readable training state (truncated or corrupt?): {_first_line(exc)}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("step"), int):
        raise StateError(f"{path} is not a training state: it holds no integer 'step'")
    for name, obj in objects.items():
        if obj is None:
            continue
        if name not in payload:
            raise StateError(f"{path} holds no state for {name!r} (it has {sorted(payload)})")
        try:
            obj.load_state_dict(payload[name])
        except Exception as exc:  # shapes or keys of another model/optimiser
            raise StateError(f"{path}: the saved {name!r} state does not fit this run: {_first_line(exc)}") from exc
    return int(payload["step"])
