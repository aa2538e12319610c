"""The data of one ``attiqa-enhance train`` run, from its config.

:func:`build_data` lists and checks every training (and validation) file up front,
splits the hold-out when there is no validation folder, and builds the training
dataset and the decoded validation set; files that cannot be used are returned with the
reason, to be reported and recorded in the exported weights.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from attiqa_loss.io import ImageListing
from attiqa_train.sampling import split_every_nth

from .config import MIN_CROP, EnhanceConfig
from .data import EnhanceDataset, check_items, list_items, load_validation, split_random_holdout
from .synthesis import synthesize_low_light_pair, synthesize_noise

__all__ = ["build_data", "build_unpaired", "exclude_every_nth"]


def exclude_every_nth(items: List[Any], every: int) -> List[Any]:
    """``items`` (paths, or ``(low, high)`` pairs ordered by the high image) in sorted order
    without every ``every``-th one (0 = keep all): the benchmark's hold-out rule."""
    if every == 0:
        return list(items)
    return split_every_nth(items, every, key=lambda it: str(it[1] if isinstance(it, tuple) else it))[0]


def _degrade_fn(cfg: EnhanceConfig):
    if cfg.data.mode != "synthetic":
        return None
    if cfg.data.task == "lowlight":
        return functools.partial(synthesize_low_light_pair, **dataclasses.asdict(cfg.data.lowlight))
    return functools.partial(synthesize_noise, **dataclasses.asdict(cfg.data.noise))


def build_data(cfg: EnhanceConfig) -> Tuple[EnhanceDataset, List[Dict[str, Any]], List[Tuple[Path, str]]]:
    """The training set, the decoded validation set, and ``(path, reason)`` of every file
    left out: by the listing (not an image, dangling symlink, ...) or by the check of
    every item up front (does not decode, pair sizes differ, smaller than the crop).

    The check comes before the hold-out split, so a bad file is left out of both sides;
    when all are good the split is what it always was."""
    d = cfg.data
    if not d.train_dir:
        raise ValueError("no training images: pass --data DIR or set data.train_dir")
    skipped: List[Tuple[Path, str]] = []
    listed = exclude_every_nth(list_items(d.train_dir, d.mode, skipped), d.exclude_every)
    items, bad = check_items(listed, d.mode, min_side=d.crop_size, max_side=d.max_side)
    skipped += bad
    if not items:
        raise ValueError(f"no usable training images in {d.train_dir}: all {len(listed)} were left out: "
                         + ImageListing(skipped=bad).summary())
    if d.val_dir:
        val_items, bad = check_items(list_items(d.val_dir, d.mode, skipped), d.mode, min_side=MIN_CROP,
                                     max_side=d.max_side, what="the quality model's minimum")
        skipped += bad
    else:
        items, val_items = split_random_holdout(items, d.val_images, cfg.train.seed)
    degrade = _degrade_fn(cfg)
    dataset = EnhanceDataset(
        items, d.mode, d.crop_size, degrade=degrade, max_side=d.max_side, flips=d.flips, rot90=d.rot90
    )
    val = load_validation(
        val_items, d.mode, crop_size=cfg.val.crop_size, degrade=degrade, max_side=d.max_side, seed=cfg.train.seed
    )
    return dataset, val, skipped


def build_unpaired(cfg: EnhanceConfig, skipped: List[Tuple[Path, str]]) -> Optional[EnhanceDataset]:
    """The ``data.unpaired_dir`` photos mixed into paired or synthetic training (None when
    ``data.unpaired_batch`` is 0), listed and checked as :func:`build_data` does, with the same
    ``exclude_every`` hold-out; files left out are appended to ``skipped``."""
    d = cfg.data
    if not d.unpaired_batch:
        return None
    if not d.unpaired_dir:
        raise ValueError(f"data.unpaired_batch={d.unpaired_batch} mixes real photos into training, but none are "
                         "given: pass --unpaired DIR or set data.unpaired_dir")
    listed = exclude_every_nth(list_items(d.unpaired_dir, "unpaired", skipped), d.exclude_every)
    items, bad = check_items(listed, "unpaired", min_side=d.crop_size, max_side=d.max_side)
    skipped += bad
    if not items:
        raise ValueError(f"no usable images in data.unpaired_dir {d.unpaired_dir}: all {len(listed)} were left out: "
                         + ImageListing(skipped=bad).summary())
    return EnhanceDataset(items, "unpaired", d.crop_size, max_side=d.max_side, flips=d.flips, rot90=d.rot90)
