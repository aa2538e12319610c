"""Helper functions shared by the tests (plain functions: fixtures live in conftest.py).

Nothing here downloads anything: networks are timm's tiny ``test_*`` models with random
weights, and images are smooth random textures generated on the fly.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from attiqa_loss import AttiqaNet, create_attiqa_net

TINY_BACKBONE = "test_resnet"


def _devices() -> List[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


#: Devices to parametrise over (CUDA only where present).
DEVICES = _devices()


def make_texture(height: int, width: int, seed: int = 0, *, smoothness: int = 8) -> torch.Tensor:
    """A smooth random RGB texture ``(3, H, W)`` in [0, 1] (upsampled low-resolution noise).

    Smooth images stand in for photos: random pixel noise would sit at one extreme of
    every attribute, while these have structure at several scales.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // smoothness), max(2, width // smoothness), generator=g)
    base = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    detail = 0.05 * torch.randn(1, 3, height, width, generator=g)
    return (base + detail).clamp(0, 1)[0]


def skimage_photos(names, *, max_side=None, height: int, width: int) -> torch.Tensor:
    """scikit-image's bundled sample photos ``names``, read with ``max_side`` and cropped to
    their top-left ``height`` x ``width``: ``(len(names), 3, height, width)`` in [0, 1].
    Skips the calling test when scikit-image (the dev extra) is not installed."""
    import pytest

    from attiqa_loss.io import read_image

    skimage = pytest.importorskip("skimage")
    folder = Path(skimage.__file__).parent / "data"
    return torch.stack([read_image(folder / n, max_side=max_side)[:, :height, :width] for n in names])


def build_tiny_net(seed: int = 0, backbone: str = TINY_BACKBONE) -> AttiqaNet:
    """A tiny randomly initialised :class:`AttiqaNet` in eval mode, reproducible from ``seed``."""
    torch.manual_seed(seed)
    return create_attiqa_net(backbone).eval()


def rewrite_checkpoint(path: Path, *, metadata=None, tensors=None) -> Path:
    """Rewrite a safetensors file in place with edited metadata and/or tensors
    (``metadata``/``tensors``: functions from the old dict to the new one)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(path))
    if metadata is not None:
        meta = metadata(meta)
    if tensors is not None:
        state = tensors(state)
    save_file(state, str(path), metadata=meta)
    return path
