"""Shared builders for tests/test_enhancement_*.py: tiny images, a tiny quality model, tiny run settings."""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from attiqa_loss import create_attiqa_net, save_checkpoint
from attiqa_loss.io import save_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def smooth_texture(h: int, w: int, seed: int) -> torch.Tensor:
    """A ``(3, h, w)`` smooth random colour texture in [0.1, 0.9] (photo-like, no flat areas)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    fine = torch.rand(1, 3, max(2, h // 2), max(2, w // 2), generator=g)
    up = lambda t: F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)  # noqa: E731
    return (0.1 + 0.8 * (0.8 * up(coarse) + 0.2 * up(fine)))[0].clamp(0, 1)


def write_images(folder: Path, count: int, size=(56, 72), seed: int = 0, suffix: str = ".png") -> List[Path]:
    """``count`` smooth textures saved as 8-bit images in ``folder``."""
    paths = []
    for i in range(count):
        path = Path(folder) / f"img{i:02d}{suffix}"
        save_image(smooth_texture(*size, seed=seed + i), path)
        paths.append(path)
    return paths


def write_pairs(folder: Path, count: int, size=(56, 72), seed: int = 0) -> None:
    """``folder/high`` textures and ``folder/low`` = half their brightness (same names)."""
    for i in range(count):
        high = smooth_texture(*size, seed=seed + i)
        save_image(high, Path(folder) / "high" / f"p{i:02d}.png")
        save_image(high * 0.5, Path(folder) / "low" / f"p{i:02d}.png")


def write_quality_model(path: Path) -> Path:
    """A tiny randomly initialised quality model (``test_resnet``) as a checkpoint."""
    torch.manual_seed(0)
    return save_checkpoint(create_attiqa_net("test_resnet"), path)


def tiny_overrides(quality: Path, **extra) -> List[str]:
    """``--set`` values for a run of a few seconds on CPU."""
    values = {
        "model.width": 4,
        "model.depth": 2,
        "model.blocks": 1,
        "data.crop_size": 32,
        "data.val_images": 2,
        "data.num_workers": 0,
        "loss.attiqa_checkpoint": str(quality),
        "loss.lpips_weight": 0.0,
        "train.steps": 4,
        "train.batch_size": 2,
        "train.warmup_steps": 1,
        "train.log_every": 2,
        "train.state_every": 2,
        "train.ema_decay": 0.9,
        "train.progress": False,
        "train.val_every": 2,
        "val.crop_size": 32,
        "val.grid_images": 2,
        "val.lpips": False,
    }
    values.update(extra)
    out = []
    for k, v in values.items():
        out += ["--set", f"{k}={v}"]
    return out
