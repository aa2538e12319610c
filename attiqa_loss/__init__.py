"""attiqa_loss: attribute-aware image quality as a differentiable training loss.

Images everywhere are ``(B, 3, H, W)`` float RGB tensors in [0, 1] (H, W >= 32).
Scores are in [0, 1] and quality-aligned: 1 = sharp, high contrast, well lit,
colourful, noise-free (so ``noisiness`` near 1 means clean).
"""

from .attributes import ATTRIBUTES, DEFAULT_TEMPLATES, AttributeSet
from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from .loss import AttiqaLoss, attiqa_loss, attribute_distance, default_checkpoint_path, load_attiqa, random_view
from .network import DEFAULT_BACKBONE, AttiqaNet, create_attiqa_net
from .validation import MIN_SIZE, check_images

__version__ = "0.1.0"

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_TEMPLATES",
    "AttributeSet",
    "AttiqaLoss",
    "AttiqaNet",
    "CheckpointError",
    "DEFAULT_BACKBONE",
    "FORMAT_VERSION",
    "MIN_SIZE",
    "attiqa_loss",
    "attribute_distance",
    "check_images",
    "create_attiqa_net",
    "default_checkpoint_path",
    "load_attiqa",
    "load_checkpoint",
    "random_view",
    "read_checkpoint_metadata",
    "save_checkpoint",
]
