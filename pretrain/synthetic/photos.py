"""The synthetic teacher's photos: decoding, with the unusable ones sorted out.

:func:`check_photos` decodes every pristine photo once, downscaled, and separates those
that cannot be used (undecodable, or too small after downscaling) with the reason;
:func:`load_photos` does the same and prints what it skipped. The uint8 tensors they
return are what :class:`pretrain.synthetic.teacher.SyntheticTeacher` takes. The hold-out
split (every n-th file of the sorted list held out for validation) is
:func:`attiqa_train.sampling.split_every_nth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from attiqa_loss.io import read_image

__all__ = ["check_photos", "load_photos"]


def check_photos(
    files: Sequence[Path], *, max_side: int, min_side: int
) -> Tuple[List[Path], Dict[Path, torch.Tensor], List[Tuple[Path, str]]]:
    """Decode every photo once (downscaled to ``max_side``) and sort out those that
    cannot be used: a file that does not decode (truncated, not an image, too many
    pixels, out of memory) or whose shorter side is below ``min_side`` after downscaling.

    Returns:
        ``(good, photos, bad)``: the usable files in the order given, their uint8
        ``(3, H, W)`` tensors by file (what :class:`SyntheticTeacher` takes), and
        ``(file, reason)`` for each of the others. When every file is usable, ``good``
        is ``files`` and each tensor is what :func:`load_photos` gives.
    """
    good: List[Path] = []
    photos: Dict[Path, torch.Tensor] = {}
    bad: List[Tuple[Path, str]] = []
    for f in files:
        try:
            img = read_image(f, max_side=max_side)
        except Exception as exc:  # MemoryError included: one file, never the run
            bad.append((f, f"cannot be decoded: {type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        h, w = img.shape[-2:]
        if min(h, w) < min_side:
            bad.append((f, f"{w}x{h} (after downscaling to max_side {max_side}) is smaller than {min_side} px"))
            continue
        good.append(f)
        photos[f] = (img * 255).round().to(torch.uint8)
    return good, photos, bad


def load_photos(files: Sequence[Path], *, max_side: int, min_side: int) -> List[torch.Tensor]:
    """Decode photos once into uint8 ``(3, H, W)`` tensors (downscaled to ``max_side``).

    Photos that do not decode or are smaller than ``min_side`` are skipped with a
    message naming them and the reason (:func:`check_photos`).
    """
    good, photos, bad = check_photos(files, max_side=max_side, min_side=min_side)
    for f, reason in bad:
        print(f"synthetic teacher: skipping {f}: {reason}")
    return [photos[f] for f in good]
