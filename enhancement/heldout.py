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
) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]], List[Tuple[torch.Tensor, ...]]]:
    """Run ``model`` over validation samples one image at a time (sizes may differ).

    Args:
        model: ``(1, 3, H, W)`` in [0, 1] -> same; put in eval mode here.
        samples: ``[{"input": (3, H, W), "target": (3, H, W) (optional)}]`` in [0, 1].
        quality: scores attributes (quality-aligned, 1 = desirable).
        device: where to run.
        lpips_model: frozen LPIPS for the ``lpips`` metric, or None.
        keep: return the first ``keep`` (input, output[, reference]) triples for image logs.

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
    for sample in samples:
        x = sample["input"][None].to(device)
        out = model(x).float().clamp(0, 1)
        images = {"input": x, "output": out}
        if "target" in sample:
            y = sample["target"][None].to(device)
            images["reference"] = y
            for suffix, pred in (("", out), ("_input", x)):
                sums["psnr" + suffix] += float(psnr(pred, y)[0])
                sums["ssim" + suffix] += float(ssim(pred, y)[0])
                if lpips_model is not None:
                    sums["lpips" + suffix] += float(lpips_model(pred, y, normalize=True).mean())
            counts["ref"] += 1
        if min(x.shape[-2:]) >= MIN_SIZE:
            for role, im in images.items():
                for name, value in quality.scores(im).items():
                    score_sums[role][name] += float(value[0])
            score_count += 1
        if len(kept) < keep:
            kept.append(tuple(im[0].cpu() for im in images.values()))
    metrics = {k: v / counts["ref"] for k, v in sums.items()}
    scores = {role: {n: v / score_count for n, v in per.items()} for role, per in score_sums.items()}
    return metrics, scores, kept
