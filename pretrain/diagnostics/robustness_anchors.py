"""Robustness, part 1: anchors, images whose attribute values are physical facts.

:func:`anchor_images` draws them (flat fields of random colours, black, white, grey,
noise fields, two-tone step edges and the same edges blurred) from a seeded generator;
:data:`ANCHOR_RULES` says what each must score (at most a bound, or above a partner
anchor); :func:`check_anchors` scores them with a network at several sizes and returns
one row per size and rule.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from attiqa_loss import ATTRIBUTES, AttiqaNet

from ..degrade.families import degrade

__all__ = ["ANCHOR_RULES", "anchor_images", "check_anchors"]

#: (anchor, attribute, rule, bound). ``"<="``: every image of the anchor scores at most
#: ``bound``; ``">"``: every image scores above its partner in the anchor named by ``bound``.
ANCHOR_RULES: List[Tuple[str, str, str, object]] = [
    ("flat colour", "sharpness", "<=", 0.1),
    ("flat colour", "contrast", "<=", 0.1),
    ("black", "sharpness", "<=", 0.1),
    ("black", "contrast", "<=", 0.1),
    ("black", "brightness", "<=", 0.1),
    ("white", "sharpness", "<=", 0.1),
    ("white", "contrast", "<=", 0.1),
    ("grey", "sharpness", "<=", 0.1),
    ("grey", "contrast", "<=", 0.1),
    ("grey", "colorfulness", "<=", 0.1),
    ("noise field", "noisiness", "<=", 0.1),
    ("step edge", "sharpness", ">", "blurred step edge"),
]


def anchor_images(size: int = 128, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The anchor images, ``{anchor: (N, 3, size, size)}`` float in [0, 1].

    ``flat colour``: 8 uniform fields of random colours (two of them pure primaries);
    ``black``, ``white``, ``grey`` (0.5); ``noise field``: per-pixel Gaussian noise
    around grey (colour and luma-only, sigma 0.15 and 0.3) and uniform random pixels;
    ``step edge``: 6 two-tone edges (random colour pairs, vertical / horizontal /
    diagonal); ``blurred step edge``: the same edges after a Gaussian blur of sigma 3 px
    (``sharpness/gaussian`` at strength 1).
    """
    g = torch.Generator().manual_seed(seed)
    s = size

    def flat(colours: torch.Tensor) -> torch.Tensor:
        return colours.view(-1, 3, 1, 1).expand(-1, 3, s, s).contiguous()

    colours = torch.cat([torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), torch.rand(6, 3, generator=g)])
    noise = []
    for sigma in (0.15, 0.3):
        noise.append(0.5 + sigma * torch.randn(3, s, s, generator=g))
        noise.append(0.5 + sigma * torch.randn(1, s, s, generator=g).expand(3, s, s))
    noise.append(torch.rand(3, s, s, generator=g))
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    masks = [(xx >= s / 2), (yy >= s / 2), (xx + yy >= s)]
    steps = []
    for i in range(6):
        a, b = torch.rand(2, 3, 1, 1, generator=g)
        if (a - b).abs().max() < 0.3:  # keep every edge clearly visible
            b = 1 - a
        m = masks[i % 3].float()[None]
        steps.append(a * (1 - m) + b * m)
    steps_t = torch.stack(steps)
    return {
        "flat colour": flat(colours),
        "black": flat(torch.zeros(1, 3)),
        "white": flat(torch.ones(1, 3)),
        "grey": flat(torch.full((1, 3), 0.5)),
        "noise field": torch.stack(noise).clamp(0, 1),
        "step edge": steps_t,
        "blurred step edge": degrade(steps_t, "sharpness", "gaussian", 1.0),
    }


@torch.no_grad()
def check_anchors(net: AttiqaNet, sizes: Sequence[int] = (128, 256), seed: int = 0) -> List[dict]:
    """Score the anchors at each size against :data:`ANCHOR_RULES`.

    Returns one row per (size, rule): ``anchor``, ``attribute``, ``rule``, ``size``,
    ``worst`` (the highest score for ``<=``, the smallest margin over the partner for
    ``>``), ``mean`` and ``passed``.
    """
    device = next(net.parameters()).device
    rows = []
    for size in sizes:
        scores = {k: net(v.to(device), check=False).float().cpu() for k, v in anchor_images(size, seed).items()}
        for anchor, attr, op, bound in ANCHOR_RULES:
            s = scores[anchor][:, ATTRIBUTES.index(attr)]
            if op == "<=":
                worst, passed = float(s.max()), bool(s.max() <= bound)
                rule = f"<= {bound}"
            else:
                margin = s - scores[bound][:, ATTRIBUTES.index(attr)]
                worst, passed = float(margin.min()), bool(margin.min() > 0)
                rule = f"> {bound}"
            rows.append({"section": "anchor", "anchor": anchor, "attribute": attr, "rule": rule, "size": size,
                         "worst": worst, "mean": float(s.mean()), "passed": passed})
    return rows
