"""Training and validation data: paired folders, synthetic pairs from clean photos, unpaired photos.

Items are addressed by ``(index, seed)`` and every random choice of an item (crop,
flips, rotation, degradation) comes from ``torch.Generator().manual_seed(seed)``; the
batch sampler (:class:`attiqa_train.sampling.StepBatchSampler`) draws indices and seeds
from ``(seed, step, rank)``. So a batch depends only on ``(seed, step, rank)``, worker processes or not, and a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from attiqa_loss.io import read_image, scan_images

from .synthesis import augment_together

__all__ = [
    "MODES",
    "list_pairs",
    "list_items",
    "check_items",
    "split_random_holdout",
    "EnhanceDataset",
    "load_validation",
]

MODES = ("paired", "synthetic", "unpaired")
PathLike = Union[str, os.PathLike]
#: One training item: an image path, or a ``(low, high)`` pair of paths.
Item = Union[Path, Tuple[Path, Path]]
#: ``(clean (B, 3, H, W), generator) -> degraded``, or ``-> (degraded, target)`` when the
#: synthesis changes the target too (light sources)
Degrade = Callable[[torch.Tensor, torch.Generator], Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")


def list_pairs(folder: PathLike, skipped: Optional[List[Tuple[Path, str]]] = None) -> List[Tuple[Path, Path]]:
    """``(low, high)`` path pairs from ``folder/low`` and ``folder/high``.

    Files pair up by their path relative to ``low/``/``high/`` without the extension
    (``low/a.jpg`` pairs with ``high/a.png``). Raises ``FileNotFoundError`` when a
    sub-folder is missing and ``ValueError`` listing names found on one side only.
    Entries the listing leaves out (not image files, dangling symlinks, ...) are
    appended to ``skipped`` as ``(path, reason)`` when it is given.
    """
    folder = Path(folder)
    sides = {}
    for side in ("low", "high"):
        if not (folder / side).is_dir():
            raise FileNotFoundError(
                f"paired data needs {folder / side}/ (with {folder}/low and {folder}/high), not found"
            )
        listing = scan_images([folder / side])
        if skipped is not None:
            skipped += listing.skipped
        files = listing.files
        sides[side] = {str(f.relative_to(folder / side).with_suffix("")): f for f in files}
    only_low = sorted(set(sides["low"]) - set(sides["high"]))
    only_high = sorted(set(sides["high"]) - set(sides["low"]))
    if only_low or only_high:
        raise ValueError(
            f"paired folders {folder}/low and {folder}/high must hold the same names; "
            f"only in low/: {only_low[:10]}, only in high/: {only_high[:10]}"
            + (" (lists truncated)" if max(len(only_low), len(only_high)) > 10 else "")
        )
    return [(sides["low"][k], sides["high"][k]) for k in sorted(sides["low"])]


def list_items(folder: PathLike, mode: str, skipped: Optional[List[Tuple[Path, str]]] = None) -> List[Item]:
    """Training items of ``folder`` for ``mode`` (pairs for ``paired``, files otherwise).

    What the listing leaves out (:func:`attiqa_loss.io.scan_images`) is appended to
    ``skipped`` as ``(path, reason)`` when it is given."""
    _check_mode(mode)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if mode == "paired":
        items: List[Item] = list_pairs(folder, skipped)
    else:
        listing = scan_images([folder])
        if skipped is not None:
            skipped += listing.skipped
        items = list(listing.files)
    if not items:
        looked_for = "low/ and high/ pairs" if mode == "paired" else "image files"
        raise ValueError(f"no images found in {folder} (looked for {looked_for})")
    return items


def check_items(
    items: Sequence[Item], mode: str, *, min_side: int, max_side: Optional[int] = None, what: str = "data.crop_size"
) -> Tuple[List[Item], List[Tuple[Path, str]]]:
    """Decode every item once and sort out those that cannot be used: a file that does
    not decode (truncated, not an image, too many pixels, out of memory), a pair whose
    two images differ in size, or an image whose shorter side (after ``max_side``) is
    below ``min_side`` (``what`` names that limit in the reason).

    Returns ``(good items in the order given, [(path, reason), ...])``; when every item
    is usable, ``good`` is ``items``.
    """
    _check_mode(mode)
    good: List[Item] = []
    bad: List[Tuple[Path, str]] = []
    for item in items:
        paths = list(item) if mode == "paired" else [item]
        shapes = []
        for path in paths:
            try:
                shapes.append(tuple(read_image(path, max_side=max_side).shape[-2:]))
            except Exception as exc:  # MemoryError included: one file, never the run
                bad.append((Path(path), f"cannot be decoded: {type(exc).__name__}: {exc}".splitlines()[0]))
                break
        if len(shapes) != len(paths):
            continue
        if len(set(shapes)) > 1:
            (h0, w0), (h1, w1) = shapes
            bad.append((Path(paths[0]), f"is {w0}x{h0} but its pair {paths[1]} is {w1}x{h1}"))
            continue
        h, w = shapes[0]
        if min(h, w) < min_side:
            scaled = f" after downscaling to data.max_side {max_side}" if max_side else ""
            bad.append((Path(paths[0]), f"{w}x{h}{scaled} is smaller than {what}={min_side}"))
            continue
        good.append(item)
    return good, bad


def split_random_holdout(items: Sequence[Item], count: int, seed: int) -> Tuple[List[Item], List[Item]]:
    """Hold ``count`` items out for validation, chosen by ``seed``; returns ``(train, val)``."""
    if count == 0:
        return list(items), []
    if count >= len(items):
        raise ValueError(
            f"holding out data.val_images={count} images for validation needs at least {count + 1} images, "
            f"found {len(items)}; add images, set data.val_dir, or lower data.val_images"
        )
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(int(seed))).tolist()
    held = set(order[:count])
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def _read_pair(item: Tuple[Path, Path], max_side: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    low, high = read_image(item[0], max_side=max_side), read_image(item[1], max_side=max_side)
    if low.shape != high.shape:
        raise ValueError(
            f"paired images differ in size: {item[0]} is {tuple(low.shape[1:])}, {item[1]} is {tuple(high.shape[1:])}"
        )
    return low, high


class EnhanceDataset(Dataset):
    """Training crops addressed by ``(index, seed)``.

    Args:
        items: from :func:`list_items`.
        mode: ``"paired"`` | ``"synthetic"`` | ``"unpaired"``.
        crop_size: side of the square training crop.
        degrade: ``(clean (1, 3, H, W), generator) -> degraded`` (or ``(degraded, target)``)
            for ``synthetic`` mode.
        max_side: downscale photos whose longer side exceeds this before cropping.
        flips, rot90: geometric augmentation, applied identically to input and target.

    Returns (per item):
        ``{"input": (3, S, S), "target": (3, S, S)}`` in [0, 1]; ``unpaired`` items have
        no ``"target"``. In ``synthetic`` mode only the input is degraded.
    """

    def __init__(
        self,
        items: Sequence[Item],
        mode: str,
        crop_size: int,
        *,
        degrade: Optional[Degrade] = None,
        max_side: Optional[int] = None,
        flips: bool = True,
        rot90: bool = True,
    ) -> None:
        _check_mode(mode)
        if mode == "synthetic" and degrade is None:
            raise ValueError("synthetic mode needs a degrade function")
        if not items:
            raise ValueError("EnhanceDataset needs at least one item")
        self.items, self.mode, self.crop_size = list(items), mode, crop_size
        self.degrade, self.max_side, self.flips, self.rot90 = degrade, max_side, flips, rot90

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        item = self.items[index]
        try:
            if self.mode == "paired":
                images = list(_read_pair(item, self.max_side))
            else:
                images = [read_image(item, max_side=self.max_side)]
        except (OSError, ValueError) as exc:  # checked up front: the file changed since
            name = " / ".join(map(str, item)) if self.mode == "paired" else str(item)
            raise type(exc)(f"{name}: {exc}") from exc
        crops = augment_together(images, self.crop_size, g, flips=self.flips, rot90=self.rot90)
        if self.mode == "paired":
            return {"input": crops[0], "target": crops[1]}
        if self.mode == "unpaired":
            return {"input": crops[0]}
        low, target = degrade_pair(self.degrade, crops[0], g)
        return {"input": low.contiguous(), "target": target.contiguous()}


def degrade_pair(degrade: Degrade, clean: torch.Tensor, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` of one ``(3, H, W)`` clean image: ``degrade`` returns the degraded
    batch, or ``(degraded, target)`` when it changes the target too (light sources)."""
    out = degrade(clean[None], generator)
    if isinstance(out, tuple):
        return out[0][0], out[1][0]
    return out[0], clean


def _center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if size <= 0 or (h <= size and w <= size):
        return image
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top : top + ch, left : left + cw]


def load_validation(
    items: Sequence[Item],
    mode: str,
    *,
    crop_size: int = 0,
    degrade: Optional[Degrade] = None,
    max_side: Optional[int] = None,
    seed: int = 0,
) -> List[Dict[str, object]]:
    """Decode the validation set once: ``[{"name", "input", "target"?}]`` with ``(3, H, W)`` tensors.

    Images are centre-cropped to ``crop_size`` (0 keeps them whole). Synthetic inputs
    are degraded with a generator fixed per image, so every validation sees the same
    inputs.
    """
    _check_mode(mode)
    out: List[Dict[str, object]] = []
    for i, item in enumerate(items):
        if mode == "paired":
            low, high = (_center_crop(im, crop_size) for im in _read_pair(item, max_side))
            out.append({"name": item[1].name, "input": low, "target": high})
            continue
        image = _center_crop(read_image(item, max_side=max_side), crop_size)
        if mode == "unpaired":
            out.append({"name": item.name, "input": image})
        else:
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * (i + 1))
            low, target = degrade_pair(degrade, image, g)
            out.append({"name": item.name, "input": low, "target": target})
    return out
