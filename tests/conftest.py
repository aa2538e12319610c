"""Shared fixtures: tiny random networks and checkpoints, synthetic images, the shared data folder.

Nothing here downloads anything: networks are timm's tiny ``test_*`` models with random
weights, and images are smooth random textures generated on the fly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import torch

from attiqa_loss import AttiqaNet, save_checkpoint

from helpers import DEVICES, build_tiny_net, make_texture

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
# workers spinning against other processes made the suite about 10x slower.
# ATTIQA_TEST_THREADS=N restores more threads (e.g. for a local timing run).
torch.set_num_threads(int(os.environ.get("ATTIQA_TEST_THREADS", "1")))


@pytest.fixture
def texture() -> Callable[..., torch.Tensor]:
    """``texture(h, w, seed=0) -> (3, H, W)`` smooth random image in [0, 1]."""
    return make_texture


@pytest.fixture
def image_batch() -> Callable[..., torch.Tensor]:
    """``image_batch(b, h, w, seed=0) -> (B, 3, H, W)`` batch of smooth textures in [0, 1]."""

    def build(batch: int = 2, height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
        return torch.stack([make_texture(height, width, seed + i) for i in range(batch)])

    return build


def _write_png(path: Path, image: torch.Tensor) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return path


@pytest.fixture
def write_png() -> Callable[..., Path]:
    """``write_png(path, h=48, w=40, seed=0)`` writes an 8-bit RGB texture PNG and returns its path."""

    def write(path, height: int = 48, width: int = 40, seed: int = 0) -> Path:
        return _write_png(Path(path), make_texture(height, width, seed))

    return write


@pytest.fixture
def image_folder(tmp_path) -> Callable[..., Path]:
    """``image_folder(sizes=((48, 40),), name="images") -> folder`` with one PNG per size."""

    def build(sizes: Sequence[Sequence[int]] = ((48, 40),), name: str = "images") -> Path:
        folder = tmp_path / name
        for i, (h, w) in enumerate(sizes):
            _write_png(folder / f"img_{i:03d}.png", make_texture(h, w, seed=i))
        return folder

    return build


@pytest.fixture
def tiny_net() -> AttiqaNet:
    """A fresh tiny random :class:`AttiqaNet` (``test_resnet``) in eval mode; safe to modify."""
    return build_tiny_net(0)


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory) -> Path:
    """A saved tiny checkpoint shared by the session: read it, never modify it."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(build_tiny_net(0), path, training={"recipe": "random-init test model"})
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_net) -> Path:
    """The ``tiny_net`` fixture saved to a private checkpoint file (free to modify or corrupt)."""
    return save_checkpoint(tiny_net, tmp_path / "tiny.safetensors", training={"recipe": "random-init test model"})


@pytest.fixture
def shared_data() -> Path:
    """The project's shared photo folder (``<repo>/../shared/data``); skips when it is absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (a fresh clone has none)")
    return path


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each available device: ``"cpu"`` always, ``"cuda"`` when present."""
    return request.param


@pytest.fixture
def make_photo_dir(write_png, tmp_path) -> Callable[..., Path]:
    """``make_photo_dir(count, height, width)``: that many textured PNGs ``p<i>.png``
    (seed ``i``) in ``tmp_path/photos``; returns the folder."""

    def make(count: int = 3, height: int = 64, width: int = 72) -> Path:
        folder = tmp_path / "photos"
        for i in range(count):
            write_png(folder / f"p{i}.png", height, width, seed=i)
        return folder

    return make


@pytest.fixture
def photo_dir(make_photo_dir) -> Path:
    """Three small photos (64x72) in ``tmp_path/photos``."""
    return make_photo_dir()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for torchrun / process-group rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
