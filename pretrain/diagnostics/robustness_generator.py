"""Robustness, part 3: the generator probe (see :mod:`pretrain.diagnostics`).

:func:`generator_probe` trains a :class:`TinyGenerator` (a residual conv net that starts
as the identity) on degraded crops with the loss alone (every target at 1, or at the
clean crops' median scores: "enough, not more"), with L1 to the clean crop plus the
loss, and with L1 alone, then measures what it learnt: contrast kept or flattened,
whether the degraded attribute's independent measure moved the right way, PSNR, a
global colour cast (:func:`attiqa_loss.measures.colour_cast`), and three signs of a
degenerate optimum that is no photo: a flat field, an embossed relief (the picture's
coarse structure lost, or detail far beyond the clean crop's) and a single hue
(:func:`hue_concentration`).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet
from attiqa_loss.measures import colour_cast, luminance, opponent_channels

from ..degrade.families import degrade
from ..degrade.filters import _separable_gaussian
from .handcrafted import handcrafted_scores
from .robustness_attacks import ATTACK_DEGRADATIONS, _loss_fn, psnr

__all__ = ["GENERATOR_MODES", "TinyGenerator", "generator_probe", "hue_concentration",
           "structure_correlation"]

#: The generator's training objectives: the loss alone with every target at 1 (the stress
#: test), the loss alone with every target at the clean crops' median score, L1 to the
#: clean crop + ``loss_weight`` x the loss (targets 1), and L1 alone (the baseline).
GENERATOR_MODES = ("loss", "loss@median", "l1+loss", "l1")


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


def hue_concentration(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """How much of an image's chroma points one way, and how much chroma there is.

    With ``z = (R - G) + i ((R + G) / 2 - B)`` per pixel (the opponent channels of
    :func:`attiqa_loss.measures.colourfulness`): ``|mean z| / mean |z|`` in [0, 1], near 1
    when every coloured pixel has the same hue (a single-hue image), lower for varied
    colours, 0 for a grey image; and the chroma ``mean |z|`` (a saturated field is near
    0.8, an ordinary photo about 0.1). ``(B, 3, H, W)`` -> two ``(B,)`` tensors."""
    rg, yb = opponent_channels(x.float())
    mean = torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)
    chroma = torch.sqrt(rg ** 2 + yb ** 2).flatten(1).mean(1)
    return mean / chroma.clamp_min(1e-6), chroma


def structure_correlation(x: torch.Tensor, reference: torch.Tensor, sigma: float = 2.0,
                          floor: float = 0.02) -> torch.Tensor:
    """Correlation of the coarse luminance (Gaussian blur of ``sigma`` px) of ``x`` and
    ``reference``, each standard deviation floored at ``floor``:
    ``cov / sqrt((var_x + floor^2) (var_ref + floor^2))``. ``(B, 3, H, W)`` x2 -> ``(B,)``
    in [-1, 1]. Any brightening, contrast change or honest restoration keeps it near 1 on
    a crop with coarse structure; an output that replaced the picture by a relief of its
    edges loses it. The floor keeps a crop with almost no coarse variation (a patch of
    sky) near 0 whatever its last-bit fluctuations do, instead of swinging over [-1, 1]."""
    a = _separable_gaussian(luminance(x.float()), sigma).flatten(1)
    b = _separable_gaussian(luminance(reference.float()), sigma).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    var_a, var_b = a.pow(2).mean(1) + floor ** 2, b.pow(2).mean(1) + floor ** 2
    return (a * b).mean(1) / (var_a * var_b).sqrt()


def generator_probe(
    net: AttiqaNet,
    clean: torch.Tensor,
    *,
    modes: Sequence[str] = GENERATOR_MODES,
    steps: int = 120,
    lr: float = 1e-3,
    loss_weight: float = 0.1,
    views: int = 0,
    seed: int = 0,
) -> Tuple[List[dict], torch.Tensor]:
    """Train a :class:`TinyGenerator` on degraded crops and measure what it learnt.

    Crop ``i`` of ``clean`` is degraded along ``ATTRIBUTES[i % 5]`` (see
    :data:`ATTACK_DEGRADATIONS`). ``modes`` (:data:`GENERATOR_MODES`): ``"loss"``
    (:class:`AttiqaLoss` with every attribute, target 1, nothing else), ``"loss@median"``
    (the same with every target at the median score of the clean crops), ``"l1+loss"``
    (L1 to the clean crop + ``loss_weight`` x the loss, targets 1) and ``"l1"`` (the
    fidelity baseline). Full-batch Adam, ``steps`` steps.

    Returns one row per mode and a ``(crops, 2 + modes, 3, H, W)`` strip: degraded | one
    column per mode | clean. Row keys:

    - ``rms_ratio``: output / input luminance RMS contrast, the lowest over crops;
      ``flat``: any crop below half its input's contrast;
    - ``right_way``: share of crops whose degraded attribute's independent measure moved
      towards the clean crop's value; ``measure_way``: mean fraction of that way;
    - ``psnr_db`` (outputs) and ``psnr_in_db`` (degraded inputs), mean PSNR to the clean crops;
    - ``cast_shift``: mean :func:`colour_cast` of the outputs minus the clean crops';
      ``cast_excess``: the largest over crops of the output's cast above the larger of
      its input's and its clean crop's (a cast the generator painted);
    - ``structure_corr``: the lowest :func:`structure_correlation` of an output with its
      clean crop; ``structure_drop``: the largest fall of that correlation from the
      degraded input's (a crop of sky has little coarse structure to correlate, so the
      fall, not the level, tells a relief); ``detail_ratio``: the largest Laplacian
      variance of an output over the larger of its clean crop's and its input's (a noisy
      input has much); ``embossed``: a crop whose structure fell by more than 0.4 or
      whose ``detail_ratio`` is above 4;
    - ``hue_conc``: the largest :func:`hue_concentration` of an output; ``single_hue``: a
      crop at 0.9 or more, 0.1 above its clean crop's, with chroma of at least 0.1 (a
      slight tint on a grey crop is a cast, measured above, not a single hue);
    - ``targets``: the loss's targets (``"1"`` or the medians), ``mean_score``.
    """
    device = next(net.parameters()).device
    clean = clean.to(device)
    targets = [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(len(clean))]
    deg = torch.cat([degrade(clean[i : i + 1].cpu(), a, *ATTACK_DEGRADATIONS[a], torch.Generator().manual_seed(seed + i))
                     for i, a in enumerate(targets)]).to(device)
    with torch.no_grad():
        medians = net(clean, check=False).float().median(dim=0).values.cpu()
    everything = {a: 1.0 for a in ATTRIBUTES}
    clean_cpu, deg_cpu = clean.cpu(), deg.cpu()
    m_deg, m_clean = handcrafted_scores(deg_cpu), handcrafted_scores(clean_cpu)
    cast_ref = torch.maximum(colour_cast(deg_cpu), colour_cast(clean_cpu))
    hue_clean = hue_concentration(clean_cpu)[0]
    sharp = ATTRIBUTES.index("sharpness")  # handcrafted column: Laplacian variance
    lap_ref = torch.maximum(m_clean[:, sharp], m_deg[:, sharp])
    structure_in = structure_correlation(deg_cpu, clean_cpu)
    rows, columns = [], [deg_cpu]
    for mode in modes:
        if mode not in GENERATOR_MODES:
            raise ValueError(f"generator_probe: mode must be one of {list(GENERATOR_MODES)}, got {mode!r}")
        goal = dict(zip(ATTRIBUTES, medians.tolist())) if mode == "loss@median" else None
        loss_fn = _loss_fn(net, everything, views, targets=goal)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = TinyGenerator().to(device)
            opt = torch.optim.Adam(gen.parameters(), lr=lr)
            for _ in range(steps):
                out = gen(deg)
                fidelity = (out - clean).abs().mean()
                if mode == "l1":
                    loss = fidelity
                elif mode == "l1+loss":
                    loss = fidelity + loss_weight * loss_fn(out)
                else:
                    loss = loss_fn(out)
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
        structure = structure_correlation(out_cpu, clean_cpu)
        detail = m_out[:, sharp] / lap_ref.clamp_min(1e-12)
        hue, chroma = hue_concentration(out_cpu)
        rows.append({
            "section": "generator", "mode": mode, "views": views, "steps": steps, "crops": len(clean),
            "targets": "/".join(f"{t:.2f}" for t in medians.tolist()) if goal else ("-" if mode == "l1" else "1"),
            "rms_ratio": float(ratio.min()), "flat": bool((ratio < 0.5).any()),
            "right_way": float(((got * need) > 0).float().mean()),
            "measure_way": float((got / need.where(need.abs() > 1e-12, torch.ones_like(need))).mean()),
            "psnr_db": float(psnr(out_cpu, clean_cpu).mean()),
            "psnr_in_db": float(psnr(deg_cpu, clean_cpu).mean()),
            "cast_shift": float((colour_cast(out_cpu) - colour_cast(clean_cpu)).mean()),
            "cast_excess": float((colour_cast(out_cpu) - cast_ref).max()),
            "structure_corr": float(structure.min()), "structure_drop": float((structure_in - structure).max()),
            "detail_ratio": float(detail.max()), "embossed": bool(((structure_in - structure > 0.4) | (detail > 4)).any()),
            "hue_conc": float(hue.max()), "single_hue": bool(((hue >= 0.9) & (hue > hue_clean + 0.1) & (chroma >= 0.1)).any()),
            "mean_score": float(scores.mean()),
        })
        columns.append(out_cpu)
    columns.append(clean_cpu)
    return rows, torch.stack(columns, dim=1)
