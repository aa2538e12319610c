"""attiqa_loss: attribute-aware image quality as a differentiable training loss.

Images everywhere are ``(B, 3, H, W)`` float RGB tensors in [0, 1] (H, W >= 32).
Scores are in [0, 1] and quality-aligned: 1 = sharp, high contrast, well lit,
colourful, noise-free (so ``noisiness`` near 1 means clean).

The names below are imported on first use (PEP 562), so ``import attiqa_loss`` and the
command-line tools' ``--help`` do not load torch or timm until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "ATTRIBUTES": "attributes",
    "DEFAULT_TEMPLATES": "attributes",
    "AttributeSet": "attributes",
    "FORMAT_VERSION": "checkpoint",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint_metadata": "checkpoint",
    "save_checkpoint": "checkpoint",
    "AttiqaLoss": "loss",
    "attiqa_loss": "loss",
    "attribute_distance": "loss",
    "default_checkpoint_path": "loss",
    "load_attiqa": "loss",
    "random_view": "loss",
    "NiqeModel": "measures",
    "fit_niqe": "measures",
    "niqe": "measures",
    "AttiqaMetric": "metric",
    "DEFAULT_BACKBONE": "network",
    "AttiqaNet": "network",
    "create_attiqa_net": "network",
    "FolderScores": "scoring",
    "compare_folders": "scoring",
    "score_folder": "scoring",
    "MIN_SIZE": "checks",
    "check_images": "checks",
}

__all__ = sorted(_EXPORTS, key=str.lower)


_SUBMODULES = ("attributes", "checkpoint", "cli", "helptext", "io", "loss", "measures", "metric", "network", "scoring",
               "checks")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # ``attiqa_loss.io`` without an explicit import, as before
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attiqa_loss' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .attributes import ATTRIBUTES, DEFAULT_TEMPLATES, AttributeSet
    from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, read_checkpoint_metadata, save_checkpoint
    from .loss import AttiqaLoss, attiqa_loss, attribute_distance, default_checkpoint_path, load_attiqa, random_view
    from .measures import NiqeModel, fit_niqe, niqe
    from .metric import AttiqaMetric
    from .network import DEFAULT_BACKBONE, AttiqaNet, create_attiqa_net
    from .scoring import FolderScores, compare_folders, score_folder
    from .checks import MIN_SIZE, check_images
