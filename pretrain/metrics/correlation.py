"""Rank and linear correlations used to judge quality predictions (docs/method.md, sections 3 and 7).

- :func:`srcc` Spearman, :func:`krcc` Kendall tau-b, :func:`plcc` Pearson: numpy, ties
  get average ranks (tau-b corrects for them).
- :func:`plcc_logistic`: Pearson after the usual 4-parameter logistic mapping of the
  predictions onto the MOS scale (VQEG), with a safe fallback to plain PLCC when the fit
  fails; :func:`correlations` reports all of them at once.
- :func:`batched_spearman` / :func:`batched_srcc`: torch, many short rankings at once
  (validity per image and level; the prompt-selection proxy).

All are higher-is-better in [-1, 1]; a constant input has no defined correlation and
gives ``nan`` (``batched_srcc`` gives 0 instead, see there).
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "rankdata",
    "srcc",
    "plcc",
    "krcc",
    "logistic4",
    "fit_logistic4",
    "plcc_logistic",
    "correlations",
    "batched_spearman",
    "batched_srcc",
]


def _pair(pred, target) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions and targets must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"a correlation needs at least 2 values, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions and targets must be finite (found NaN or Inf)")
    return x, y


def rankdata(values) -> np.ndarray:
    """1-based ranks of a 1-D array; tied values share the average of their ranks."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], x.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    ranks = np.empty_like(x)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((x * y).sum() / denom, -1.0, 1.0))


def plcc(pred, target) -> float:
    """Pearson linear correlation (no mapping); ``nan`` if either input is constant."""
    return _pearson(*_pair(pred, target))


def srcc(pred, target) -> float:
    """Spearman rank correlation (Pearson of average ranks); ``nan`` if either input is constant."""
    x, y = _pair(pred, target)
    return _pearson(rankdata(x), rankdata(y))


def krcc(pred, target, *, chunk: int = 2048) -> float:
    """Kendall tau-b (tie-corrected); exact O(n^2) pair count in chunks of rows.

    ``nan`` if either input is constant.
    """
    x, y = _pair(pred, target)
    n = x.size
    concordant_minus_discordant = 0.0
    tied_x = tied_y = 0.0  # pairs tied in x (resp. y), each counted once
    for start in range(0, n, chunk):
        xs, ys = x[start : start + chunk, None], y[start : start + chunk, None]
        dx = np.sign(xs - x[None, :])
        dy = np.sign(ys - y[None, :])
        # Count each unordered pair once: keep columns j > i.
        rows = np.arange(start, min(start + chunk, n))[:, None]
        upper = np.arange(n)[None, :] > rows
        concordant_minus_discordant += float((dx * dy * upper).sum())
        tied_x += float(((dx == 0) & upper).sum())
        tied_y += float(((dy == 0) & upper).sum())
    total = n * (n - 1) / 2.0
    denom = math.sqrt((total - tied_x) * (total - tied_y))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(concordant_minus_discordant / denom, -1.0, 1.0))


def logistic4(x, b1: float, b2: float, b3: float, b4: float):
    """``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``: rises from ``b2`` to ``b1`` around ``b3``."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / (abs(b4) + 1e-12), -60.0, 60.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(pred, target) -> Optional[np.ndarray]:
    """Least-squares fit of :func:`logistic4` mapping ``pred`` onto ``target``.

    Returns the parameters ``(b1, b2, b3, b4)``, or ``None`` when scipy is missing, the
    optimiser does not converge, or the result is not finite.
    """
    x, y = _pair(pred, target)
    try:
        from scipy.optimize import OptimizeWarning, curve_fit
    except ImportError:  # scipy is an install requirement; stay usable without it anyway
        return None
    spread = float(x.std()) or 1.0
    # A decreasing relation is fitted by starting from the mirrored curve.
    sign = 1.0 if _pearson(x, y) >= 0 or math.isnan(_pearson(x, y)) else -1.0
    hi, lo = (float(y.max()), float(y.min())) if sign > 0 else (float(y.min()), float(y.max()))
    p0 = [hi, lo, float(np.median(x)), spread / 4.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError, OptimizeWarning, TypeError):
        return None
    if not np.isfinite(params).all():
        return None
    return params


def plcc_logistic(pred, target) -> Tuple[float, bool]:
    """PLCC after the 4-parameter logistic mapping; ``(value, fitted)``.

    When the fit fails (or would make the correlation weaker than the plain one, a sign
    of a degenerate fit) this returns ``(plcc(pred, target), False)``. The result keeps
    the sign of the plain PLCC: a decreasing relation stays negative.
    """
    x, y = _pair(pred, target)
    plain = _pearson(x, y)
    params = fit_logistic4(x, y)
    if params is None:
        return plain, False
    value = _pearson(logistic4(x, *params), y)
    if math.isnan(value) or math.isnan(plain) or abs(value) < abs(plain) - 1e-9:
        return plain, False
    # The mapping may be decreasing; keep the sign of the relation so an anti-correlated
    # predictor is not reported as a good one.
    return math.copysign(abs(value), plain), True


def correlations(pred, target) -> Dict[str, float]:
    """All metrics of one evaluation.

    Returns:
        ``{"srcc", "plcc" (after the logistic fit, or plain on fallback), "plcc_plain",
        "krcc", "logistic_fit" (1.0 fitted / 0.0 fell back), "n"}``.
    """
    x, y = _pair(pred, target)
    fitted_plcc, fitted = plcc_logistic(x, y)
    return {
        "srcc": srcc(x, y),
        "plcc": fitted_plcc,
        "plcc_plain": _pearson(x, y),
        "krcc": krcc(x, y),
        "logistic_fit": 1.0 if fitted else 0.0,
        "n": float(x.size),
    }


def _torch_average_ranks(x: torch.Tensor) -> torch.Tensor:
    # Pairwise comparison: exact average ranks for short last dimensions (levels).
    less = (x.unsqueeze(-1) > x.unsqueeze(-2)).sum(-1).to(x.dtype)
    equal = (x.unsqueeze(-1) == x.unsqueeze(-2)).sum(-1).to(x.dtype)
    return less + (equal + 1) / 2


def batched_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation along the last dim of two broadcastable tensors.

    Exact average ranks from pairwise comparisons (O(L^2) memory per row: meant for
    short rankings such as the L degradation levels of one image). A constant row has no
    ranking and gives ``nan``.

    Shape:
        - a, b: ``(..., L)``, broadcastable.
        - Output: the broadcast shape without the last dim, float64.
    """
    ra = _torch_average_ranks(a.double())
    rb = _torch_average_ranks(b.double().to(ra.device))
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denom = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    out = (ra * rb).sum(-1) / denom
    return torch.where(denom > 0, out, torch.full_like(out, math.nan))


def batched_srcc(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of every row of ``values`` with ``reference``, along the last dim.

    As :func:`batched_spearman`, except that a constant row (no ranking at all) scores 0
    rather than ``nan``, so a prompt that ignores the degradation is averaged in as
    uninformative instead of poisoning the mean.

    Shape:
        - values: ``(..., L)``; reference: ``(L,)``.
        - Output: ``(...)``.
    """
    if values.shape[-1] != reference.shape[-1]:
        raise ValueError(f"values end in {values.shape[-1]} levels but reference has {reference.shape[-1]}")
    out = batched_spearman(values, reference.to(values.device)).nan_to_num(nan=0.0)
    return out.to(values.dtype if values.is_floating_point() else torch.float64)
