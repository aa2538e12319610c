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
            run validates the same images every ``val.every`` steps, and those constants
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
    counts: Dict[str, int] = defaultdict(int)
    score_sums: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    score_count = 0
    kept: List[Tuple[torch.Tensor, ...]] = []
    for index, sample in enumerate(samples):
        x = sample["input"][None].to(device)
        out = model(x).float().clamp(0, 1)
        y = sample["target"][None].to(device) if "target" in sample else None
        scored = min(x.shape[-2:]) >= MIN_SIZE
        known = cache.get(index) if cache is not None else None
        if known is None:  # what does not depend on the model: the input's and the reference's figures
            known = _figures(x, y, "_input", "input", quality, lpips_model, scored)
            if y is not None and scored:
                known.update(_figures(y, None, "", "reference", quality, None, scored))
            if cache is not None:
                cache[index] = known
        for key, value in {**known, **_figures(out, y, "", "output", quality, lpips_model, scored)}.items():
            if "/" in key:
                role, name = key.split("/", 1)
                score_sums[role][name] += value
            else:
                sums[key] += value
        counts["ref"] += y is not None
        score_count += scored
        if len(kept) < keep:
            images = (x, out) if y is None else (x, out, y)
            kept.append(tuple(im[0].cpu() for im in images))
    metrics = {k: v / counts["ref"] for k, v in sums.items()}
    scores = {role: {n: v / score_count for n, v in score_sums[role].items()}
              for role in ("input", "output", "reference") if role in score_sums}
    return metrics, scores, kept


def _figures(pred: Optional[torch.Tensor], target: Optional[torch.Tensor], suffix: str, role: str,
             quality: AttiqaLoss, lpips_model: Optional[nn.Module], scored: bool) -> Dict[str, float]:
    """``psnr<suffix>``, ``ssim<suffix>`` (``lpips<suffix>``) of ``pred`` against ``target``
    (when there is one) and, when ``scored``, the ``<role>/<attribute>`` scores of ``pred``."""
    figures: Dict[str, float] = {}
    if pred is not None and target is not None:
        figures["psnr" + suffix] = float(psnr(pred, target)[0])
        figures["ssim" + suffix] = float(ssim(pred, target)[0])
        if lpips_model is not None:
            figures["lpips" + suffix] = float(lpips_model(pred, target, normalize=True).mean())
    if scored:
        for name, value in quality.scores(pred).items():
            figures[f"{role}/{name}"] = float(value[0])
    return figures
