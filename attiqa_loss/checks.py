"""Input checks shared by every public entry point (docs/method.md, section 1)."""

from __future__ import annotations

import math

import torch

__all__ = ["MIN_SIZE", "RANGE_TOLERANCE", "check_images", "check_device"]

#: Smallest accepted height and width.
MIN_SIZE = 32
#: How far outside [0, 1] values may stray (rounding, resampling overshoot) before
#: they count as "far outside" and are rejected.
RANGE_TOLERANCE = 0.05


def check_images(images: torch.Tensor, *, name: str = "images", min_size: int = MIN_SIZE) -> None:
    """Raise if ``images`` is not a ``(B, 3, H, W)`` float RGB batch in [0, 1].

    Checks, in order: tensor type, floating dtype, rank 4, 3 channels, non-empty batch,
    ``H, W >= min_size``, finite values, values within ``[0, 1]`` up to
    :data:`RANGE_TOLERANCE`. Each failure raises ``TypeError`` or ``ValueError`` whose
    message names the rule and the value that was seen.

    The range/finite check reads one min and one max (a single device sync).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor in [0, 1], got dtype={images.dtype} "
            "(convert integer images with images.float() / 255)"
        )
    if images.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name} must be at least {min_size}x{min_size} pixels, got H={h}, W={w}")
    lo, hi = (float(v) for v in torch.aminmax(images.detach().float()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, found NaN or Inf (min={lo}, max={hi})")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must be in [0, 1] (RGB, not [-1, 1] or [0, 255]), got min={lo:.4g}, max={hi:.4g}"
        )


def check_device(name: "str | torch.device") -> torch.device:
    """``name`` as a :class:`torch.device`, after checking that this machine has it.

    Raises ``ValueError`` with one line naming the device: a name torch does not know,
    ``meta`` (shapes without data: nothing can be scored there), ``cuda`` without CUDA
    (or a ``cuda:N`` beyond the GPUs present), ``mps`` without Metal. Commands call it on their ``--device``/``device`` option before any work.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device {name!r} is not a torch device name (e.g. cpu, cuda, cuda:1): {exc}") from None
    if device.type == "meta":
        raise ValueError(f"device {name!r} holds no data and computes nothing (shapes only); use cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asks for CUDA, but CUDA is not available here "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} asks for Apple Metal (mps), which is not available here; use cpu")
    return device
