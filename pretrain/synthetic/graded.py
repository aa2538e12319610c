"""Does a score follow its degradation? Per-image SRCC against graded levels.

Used for validation during training (:func:`pretrain.training.train.heldout_srcc`) and
by the validity report (``attiqa-pretrain validity``,
:mod:`pretrain.diagnostics.validity_report`). It lives beside the synthetic teacher
because it degrades photos the way the teacher does
(:func:`pretrain.synthetic.teacher.apply_plan`), so training reads it without importing
the diagnostics.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch

from attiqa_loss.attributes import ATTRIBUTES

from ..degrade.families import graded_strengths
from ..metrics.correlation import batched_spearman
from .teacher import NO_OP_TOLERANCE, apply_plan

__all__ = ["spearman", "graded_images", "family_srcc"]

Scorer = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, 5)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dim (NaN where either side is constant);
    :func:`pretrain.metrics.correlation.batched_spearman`."""
    return batched_spearman(a, b)


@torch.no_grad()
def graded_images(
    image: torch.Tensor,
    attribute: str,
    family: str,
    levels: int,
    *,
    seed: int = 0,
    base: Optional[Sequence[tuple]] = None,
) -> torch.Tensor:
    """One image degraded at ``levels`` graded strengths: ``(levels, 3, H, W)``.

    ``base`` is an optional list of ``(attribute, family, strength)`` applied to every
    level (a second, fixed degradation: the mixed cases), in the camera order of
    :data:`pretrain.synthetic.teacher.PIPELINE_ORDER`.
    """
    x = image[None] if image.ndim == 3 else image
    rows = []
    for s in graded_strengths(levels).tolist():
        plan = {a: (f, st) for a, f, st in (base or [])}
        plan[attribute] = (family, s)
        rows.append(apply_plan(x, plan, torch.Generator().manual_seed(seed)))
    return torch.cat(rows)


def family_srcc(
    scorer: Scorer,
    images: Sequence[torch.Tensor],
    attribute: str,
    family: str,
    levels: int = 6,
    *,
    seed: int = 0,
    base: Optional[Sequence[tuple]] = None,
) -> Dict[str, torch.Tensor]:
    """Per-image SRCC between every attribute's score and ``1 - strength``.

    A photo that the degradation leaves unchanged (desaturating a grey photo: largest
    pixel change below :data:`pretrain.synthetic.teacher.NO_OP_TOLERANCE`) has no order to
    follow; its rows are NaN, so ``nanmean`` leaves it out.

    Returns:
        ``{"srcc": (n_images, 5), "shift": (n_images, 5)}``: the SRCC of each attribute's
        score with the quality-aligned level, and each score's change from the lowest to
        the highest strength (negative = the score fell).
    """
    quality = 1 - graded_strengths(levels).double()
    srcc, shift = [], []
    for i, img in enumerate(images):
        x = graded_images(img, attribute, family, levels, seed=seed + i, base=base)
        if (x[-1] - x[0]).abs().amax() < NO_OP_TOLERANCE:
            srcc.append(torch.full((len(ATTRIBUTES),), math.nan, dtype=torch.float64))
            shift.append(torch.full((len(ATTRIBUTES),), math.nan))
            continue
        s = scorer(x).float().cpu()
        srcc.append(spearman(s.T.double(), quality.expand(len(ATTRIBUTES), -1)))
        shift.append(s[-1] - s[0])
    return {"srcc": torch.stack(srcc).float(), "shift": torch.stack(shift).float()}
