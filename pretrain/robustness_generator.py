"""Robustness, part 3: the generator probe (see :mod:`pretrain.robustness`).

:func:`generator_probe` trains a :class:`TinyGenerator` (a residual conv net that starts
as the identity) on degraded crops with the loss alone, with L1 to the clean crop plus
the loss, and with L1 alone, then measures what it learnt: contrast kept or flattened,
whether the degraded attribute's independent measure moved the right way, PSNR, and a
global colour cast (:func:`colour_cast`). A loss with a degenerate optimum turns every
image into a flat saturated field.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet

from .degradations import degrade
from .handcrafted import handcrafted_scores, opponent_channels
from .robustness_attacks import ATTACK_DEGRADATIONS, _loss_fn, psnr

__all__ = ["TinyGenerator", "colour_cast", "generator_probe"]


class TinyGenerator(nn.Module):
    """A 4-layer residual conv net: ``(B, 3, H, W) -> (B, 3, H, W)`` in [0, 1].

    ``out = clamp(x + body(x), 0, 1)``; the last layer starts at zero, so the untrained
    generator is the identity.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)


def colour_cast(x: torch.Tensor) -> torch.Tensor:
    """Length of the mean opponent-colour vector (R-G, (R+G)/2-B): ``(B, 3, H, W)`` -> ``(B,)``.

    0 for an image whose colours average to grey; a global tint raises it."""
    rg, yb = opponent_channels(x.float())
    return torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)


def generator_probe(
    net: AttiqaNet,
    clean: torch.Tensor,
    *,
    modes: Sequence[str] = ("loss", "l1+loss", "l1"),
    steps: int = 60,
    lr: float = 1e-3,
    loss_weight: float = 0.1,
    views: int = 0,
    seed: int = 0,
) -> Tuple[List[dict], torch.Tensor]:
    """Train a :class:`TinyGenerator` on degraded crops and measure what it learnt.

    Crop ``i`` of ``clean`` is degraded along ``ATTRIBUTES[i % 5]`` (see
    :data:`ATTACK_DEGRADATIONS`). ``modes``: ``"loss"`` (:class:`AttiqaLoss` with every
    attribute, nothing else), ``"l1+loss"`` (L1 to the clean crop + ``loss_weight`` x the
    loss) and ``"l1"`` (the fidelity baseline). Full-batch Adam, ``steps`` steps.

    Returns one row per mode (``rms_ratio``: output / input luminance RMS contrast, the
    lowest over crops; ``flat``: any crop below half its input's contrast; ``right_way``:
    share of crops whose degraded attribute's independent measure moved towards the clean
    crop's value; ``measure_way``: mean fraction of that way; ``psnr_db`` to the clean
    crops; ``cast_shift``: mean :func:`colour_cast` of the outputs minus the clean crops';
    ``mean_score``) and a ``(crops, 2 + modes, 3, H, W)`` strip: degraded | one
    column per mode | clean.
    """
    device = next(net.parameters()).device
    clean = clean.to(device)
    targets = [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(len(clean))]
    deg = torch.cat([degrade(clean[i : i + 1].cpu(), a, *ATTACK_DEGRADATIONS[a], torch.Generator().manual_seed(seed + i))
                     for i, a in enumerate(targets)]).to(device)
    loss_fn = _loss_fn(net, {a: 1.0 for a in ATTRIBUTES}, views)
    m_deg, m_clean = handcrafted_scores(deg).cpu(), handcrafted_scores(clean).cpu()
    rows, columns = [], [deg.cpu()]
    for mode in modes:
        if mode not in ("loss", "l1+loss", "l1"):
            raise ValueError(f"generator_probe: mode must be 'loss', 'l1+loss' or 'l1', got {mode!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = TinyGenerator().to(device)
            opt = torch.optim.Adam(gen.parameters(), lr=lr)
            for _ in range(steps):
                out = gen(deg)
                fidelity = (out - clean).abs().mean()
                if mode == "loss":
                    loss = loss_fn(out)
                elif mode == "l1":
                    loss = fidelity
                else:
                    loss = fidelity + loss_weight * loss_fn(out)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                out = gen(deg)
                scores = net(out, check=False).float().cpu()
        out_cpu = out.cpu()
        m_out = handcrafted_scores(out_cpu)
        idx = torch.tensor([ATTRIBUTES.index(a) for a in targets])
        r = torch.arange(len(targets))
        need, got = m_clean[r, idx] - m_deg[r, idx], m_out[r, idx] - m_deg[r, idx]
        rms = ATTRIBUTES.index("contrast")  # handcrafted column: luminance RMS contrast
        ratio = m_out[:, rms] / m_deg[:, rms].clamp_min(1e-6)
        rows.append({
            "section": "generator", "mode": mode, "views": views, "steps": steps, "crops": len(clean),
            "rms_ratio": float(ratio.min()), "flat": bool((ratio < 0.5).any()),
            "right_way": float(((got * need) > 0).float().mean()),
            "measure_way": float((got / need.where(need.abs() > 1e-12, torch.ones_like(need))).mean()),
            "psnr_db": float(psnr(out_cpu, clean.cpu()).mean()),
            "cast_shift": float((colour_cast(out_cpu) - colour_cast(clean.cpu())).mean()),
            "mean_score": float(scores.mean()),
        })
        columns.append(out_cpu)
    columns.append(clean.cpu())
    return rows, torch.stack(columns, dim=1)
