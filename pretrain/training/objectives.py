"""Pretraining objective (docs/method.md, section 6): ranking + calibration, with masking,
plus the synthetic teacher's consistency and specificity terms.

Project choices, written down:
- ranking is a hinge on the sigmoid scores with a margin proportional to the label gap,
  ``max(0, margin * (y_i - y_j) - (s_i - s_j))`` over pairs with ``y_i - y_j > delta``
  that belong to the same group (one source photo for the synthetic teacher; the whole
  batch for CLIP labels, group ``-1``);
- calibration is binary cross-entropy between the logit and the soft label, so absolute
  scores stay meaningful for ``AttiqaLoss`` targets;
- a missing label is NaN and is masked out of both;
- consistency: two overlapping crops at the same strength score alike (L1, all attributes);
- specificity: inside a group only the degraded attribute changes, so the other
  attributes' scores are pulled to their group mean (L1).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["ranking_loss", "calibration_loss", "consistency_loss", "specificity_loss", "pretrain_losses"]


def ranking_loss(
    scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, *, margin: float = 0.5, delta: float = 0.05
) -> torch.Tensor:
    """Masked pairwise hinge ranking loss averaged over valid pairs (0 if none).

    Shape:
        scores, labels: ``(N, A)``; groups: ``(N,)``. Returns a scalar.
    """
    valid = ~torch.isnan(labels)
    y = torch.nan_to_num(labels)
    same = groups[:, None] == groups[None, :]
    # (N, N, A): pairs (i, j) where i should score higher than j on attribute a.
    gap = y[:, None, :] - y[None, :, :]
    use = (gap > delta) & valid[:, None, :] & valid[None, :, :] & same[:, :, None]
    if not use.any():
        return scores.sum() * 0.0
    diff = scores[:, None, :] - scores[None, :, :]
    hinge = F.relu(margin * gap - diff)
    return hinge[use].mean()


def calibration_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked BCE between logits and soft labels in [0, 1] (0 if no label)."""
    valid = ~torch.isnan(labels)
    if not valid.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[valid].float(), labels[valid].float())


def consistency_loss(scores: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the scores of each pair ``(i, j)`` (``pairs``: ``(P, 2)``)."""
    if pairs.numel() == 0:
        return scores.sum() * 0.0
    return (scores[pairs[:, 0]] - scores[pairs[:, 1]]).abs().mean()


def specificity_loss(scores: torch.Tensor, groups: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance of each off-target score from its group's mean.

    Shape:
        scores: ``(N, A)``; groups, target: ``(N,)`` (target = degraded attribute index).
    """
    uniq, inverse = torch.unique(groups, return_inverse=True)
    counts = torch.zeros(len(uniq), device=scores.device).index_add_(0, inverse, torch.ones_like(groups, dtype=torch.float))
    sums = torch.zeros(len(uniq), scores.shape[1], device=scores.device, dtype=scores.dtype).index_add_(0, inverse, scores)
    means = sums / counts[:, None]
    off = torch.ones_like(scores, dtype=torch.bool)
    off[torch.arange(len(target)), target] = False
    return (scores - means[inverse]).abs()[off].mean()


def pretrain_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    *,
    pairs: Optional[torch.Tensor] = None,
    target: Optional[torch.Tensor] = None,
    margin: float = 0.5,
    delta: float = 0.05,
) -> Dict[str, torch.Tensor]:
    """Every term for one batch, unweighted: ``ranking``, ``calibration`` and, when
    ``pairs``/``target`` are given (synthetic teacher), ``consistency``/``specificity``."""
    scores = torch.sigmoid(logits.float())
    out = {
        "ranking": ranking_loss(scores, labels, groups, margin=margin, delta=delta),
        "calibration": calibration_loss(logits, labels),
    }
    if pairs is not None:
        out["consistency"] = consistency_loss(scores, pairs)
    if target is not None:
        out["specificity"] = specificity_loss(scores, groups, target)
    return out
