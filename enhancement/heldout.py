"""Validation: PSNR/SSIM (LPIPS when available) and attribute scores of input, output, reference."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import kornia
import torch
from torch import nn

from attiqa_loss import AttiqaLoss
from attiqa_loss.checks import MIN_SIZE

__all__ = ["psnr", "ssim", "evaluate"]


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1] (kornia ``psnr``). ``(B, 3, H, W)`` x2 -> ``(B,)``."""
    return torch.stack([kornia.metrics.psnr(o, t, 1.0) for o, t in zip(output, target)])


def ssim(output: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image mean SSIM (kornia ``ssim``). ``(B, 3, H, W)`` x2 -> ``(B,)``."""
    return kornia.metrics.ssim(output, target, window).flatten(1).mean(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    samples: Sequence[Mapping[str, object]],
    *,
    quality: AttiqaLoss,
    device: torch.device,
    lpips_model: Optional[nn.Module] = None,
    keep: int = 0,
    cache: Optional[Dict[int, Dict[str, float]]] = None,
) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]], List[Tuple[torch.Tensor, ...]]]:
    """Run ``model`` over validation samples one image at a time (sizes may differ).

    Args:
        model: ``(1, 3, H, W)`` in [0, 1] -> same; put in eval mode here.
        samples: ``[{"input": (3, H, W), "target": (3, H, W) (optional)}]`` in [0, 1].
        quality: scores attributes (quality-aligned, 1 = desirable).
        device: where to run.
        lpips_model: frozen LPIPS for the ``lpips`` metric, or None.
        keep: return the first ``keep`` (input, output[, reference]) triples for image logs.
        cache: a dict kept between calls on the same ``samples`` and ``quality``: what does
            not depend on ``model`` (the input's PSNR/SSIM/LPIPS, the input's and the
            reference's attribute scores) is computed on the first call only. A training
            run validates the same images every ``train.val_every`` steps, and those constants
            were two thirds of the attribute scoring.

    Returns:
        ``(metrics, scores, kept)``: ``metrics`` has ``psnr``, ``ssim`` (``lpips``) of the
        output and ``psnr_input``, ... of the unprocessed input, each averaged over images
        with a ``target`` (empty without); ``scores[role][attribute]`` the mean attribute
        score of ``input``/``output``/``reference`` (the sample's clean ``target``) over
        images of at least 32x32.
    """
    model.eval()
    sums: Dict[str, float] = defaultdict(float)
    score_sums: Dict[str, Dict[str, float]] = {}
    references = scored_count = 0
    kept: List[Tuple[torch.Tensor, ...]] = []
    for index, sample in enumerate(samples):
        x = sample["input"][None].to(device)
        out = model(x).float().clamp(0, 1)
        y = sample["target"][None].to(device) if "target" in sample else None
        scored = min(x.shape[-2:]) >= MIN_SIZE
        known = cache.get(index) if cache is not None else None
        if known is None:  # what does not depend on the model: the input's and the reference's figures
            metrics, scores = _figures(x, y, "_input", quality, lpips_model, scored)
            known = {"metrics": metrics, "scores": {"input": scores}}
            if y is not None and scored:
                known["scores"]["reference"] = _figures(y, None, "", quality, None, scored)[1]
            if cache is not None:
                cache[index] = known
        metrics, scores = _figures(out, y, "", quality, lpips_model, scored)
        for key, value in {**known["metrics"], **metrics}.items():
            sums[key] += value
        for role, per in (("input", known["scores"]["input"]), ("output", scores),
                          ("reference", known["scores"].get("reference", {}))):
            for name, value in per.items():
                score_sums.setdefault(role, defaultdict(float))[name] += value
        references += y is not None
        scored_count += scored
        if len(kept) < keep:
            images = (x, out) if y is None else (x, out, y)
            kept.append(tuple(im[0].cpu() for im in images))
    metrics = {k: v / references for k, v in sums.items()}
    scores = {role: {n: v / scored_count for n, v in per.items()} for role, per in score_sums.items()}
    return metrics, scores, kept


def _figures(pred: torch.Tensor, target: Optional[torch.Tensor], suffix: str, quality: AttiqaLoss,
             lpips_model: Optional[nn.Module], scored: bool) -> Tuple[Dict[str, float], Dict[str, float]]:
    """``({psnr<suffix>, ssim<suffix>(, lpips<suffix>)}, {attribute: score})`` of ``pred``:
    the first against ``target`` (empty without one), the second when ``scored``."""
    metrics: Dict[str, float] = {}
    if target is not None:
        metrics["psnr" + suffix] = float(psnr(pred, target)[0])
        metrics["ssim" + suffix] = float(ssim(pred, target)[0])
        if lpips_model is not None:
            metrics["lpips" + suffix] = float(lpips_model(pred, target, normalize=True).mean())
    scores = {name: float(value[0]) for name, value in quality.scores(pred).items()} if scored else {}
    return metrics, scores
