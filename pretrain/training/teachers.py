"""The two teachers' training images: graded synthetic degradations and CLIP-labelled photos.

:func:`build_synthetic` checks every pristine photo up front and builds the
:class:`~pretrain.synthetic.teacher.SyntheticTeacher` on the training side of the hold-out
split; :class:`ClipLabelled` draws random crops of the photos ``attiqa-pretrain label``
scored, with their pseudo-labels.
"""

from __future__ import annotations

import torch

from attiqa_loss.io import ImageListing, scan_images
from attiqa_train.sampling import random_crop_box, split_every_nth

from ..clip.label_store import read_labels
from ..synthetic.photos import check_photos
from ..synthetic.teacher import SyntheticTeacher, resolve_families
from .config import SyntheticConfig

__all__ = ["ClipLabelled", "build_synthetic"]


class ClipLabelled:
    """Photos with CLIP pseudo-labels, drawn as random crops (group ``-1``: one ranking pool)."""

    def __init__(self, label_dir: str, *, crop: int, max_side: int) -> None:
        self.paths, self.labels = read_labels(label_dir)
        if not self.paths:
            raise ValueError(f"no labelled images in {label_dir}")
        self.crop, self.max_side = crop, max_side

    def sample(self, n: int, g: torch.Generator):
        from attiqa_loss.io import read_image

        idx = torch.randint(len(self.paths), (n,), generator=g).tolist()
        images = []
        for i in idx:
            img = read_image(self.paths[i], max_side=self.max_side)
            h, w = img.shape[-2:]
            c = min(self.crop, h, w)
            top, left = random_crop_box(h, w, c, g)
            patch = img[:, top : top + c, left : left + c]
            if c != self.crop:
                patch = torch.nn.functional.interpolate(patch[None], size=(self.crop, self.crop), mode="bilinear")[0]
            images.append(patch)
        return torch.stack(images), self.labels[idx].clone()


def build_synthetic(cfg: SyntheticConfig):
    """The synthetic teacher of section ``cfg``, its training and held-out files, the listing's skipped
    entries (not an image, dangling symlink, ...) and ``(path, reason)`` of each photo
    that cannot be used (does not decode, or smaller than ``synthetic.crop // 2``).

    Every photo is checked up front, before the hold-out split, so a bad one is left out
    of both sides; when all are good the split and the photos are what they always were.
    """
    listing = scan_images(cfg.images)
    good, photos, bad = check_photos(listing.files, max_side=cfg.max_side,
                                     min_side=cfg.crop // 2)
    if not good:
        raise ValueError(f"no usable photos for the synthetic teacher in {cfg.images}: "
                         + (ImageListing(skipped=bad).summary() if bad else "no image files found"))
    train_files, held_files = split_every_nth(good, cfg.holdout_every)
    if not train_files:
        raise ValueError(f"synthetic.holdout_every={cfg.holdout_every} holds out every usable photo "
                         f"({len(good)}); add photos or raise it")
    teacher = SyntheticTeacher(
        [photos[f] for f in train_files],
        crop=cfg.crop,
        levels=cfg.levels,
        min_gap=cfg.min_gap,
        nuisance_prob=cfg.nuisance_prob,
        scale_range=cfg.scale_range,
        families=resolve_families(cfg.families),
        nuisance_weights=cfg.nuisance_weights,
    )
    # Photos between crop // 2 and crop are used, their crops upscaled (as always: leaving
    # them out would change the photos and draws of existing recipes); each is named.
    teacher.upscaled = [(f, f"{photos[f].shape[-1]}x{photos[f].shape[-2]} (after downscaling to max_side "
                            f"{cfg.max_side}) is smaller than synthetic.crop={cfg.crop}: "
                            "its crops are upscaled")
                        for f in good if min(photos[f].shape[-2:]) < cfg.crop]
    return teacher, train_files, held_files, list(listing.skipped), bad
