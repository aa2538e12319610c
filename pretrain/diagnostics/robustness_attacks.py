"""Robustness, part 2: bounded attacks on the pixels of degraded photos (:mod:`pretrain.diagnostics`).

:func:`bounded_attack` runs Adam on the pixels of a batch, asking for one attribute
only, projected to an L-infinity ball; :func:`attack_rows` starts it from photos
degraded along each attribute (:data:`ATTACK_DEGRADATIONS`) and compares the score gain
with that of the real fix, and with how far an independent handcrafted measure of the
attribute (:data:`INDEPENDENT_MEASURES`) moved. :func:`psnr` and
:func:`high_frequency_fraction` describe the perturbation; the generator probe
(:mod:`pretrain.diagnostics.robustness_generator`) uses them too.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from attiqa_loss import ATTRIBUTES, AttiqaLoss, AttiqaNet

from ..degrade.families import degrade
from ..degrade.filters import _separable_gaussian
from ..training.hardening_terms import clipped_fix
from .handcrafted import handcrafted_scores

__all__ = ["ATTACK_DEGRADATIONS", "INDEPENDENT_MEASURES", "attack_rows", "bounded_attack",
           "high_frequency_fraction", "psnr"]

#: The degradation each attack starts from: ``{attribute: (family, strength)}``.
ATTACK_DEGRADATIONS: Dict[str, Tuple[str, float]] = {
    "sharpness": ("gaussian", 0.6),
    "contrast": ("linear", 0.6),
    "brightness": ("exposure", 0.6),
    "colorfulness": ("desaturate", 0.7),
    "noisiness": ("gaussian", 0.5),
}

#: Name of the handcrafted measure of each attribute (column of ``handcrafted_scores``).
INDEPENDENT_MEASURES: Dict[str, str] = {
    "sharpness": "Laplacian variance",
    "contrast": "RMS contrast",
    "brightness": "mean luminance",
    "colorfulness": "Hasler-Suesstrunk colourfulness",
    "noisiness": "Immerkaer noise sigma (negated)",
}



def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1]: ``(B, 3, H, W)`` x2 -> ``(B,)``."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def high_frequency_fraction(delta: torch.Tensor) -> float:
    """Share of a perturbation's energy (``(B, 3, H, W)``, any range) that a Gaussian blur
    of standard deviation 1.5 px removes."""
    low = _separable_gaussian(delta.float(), 1.5)
    total = delta.pow(2).sum()
    return float((delta - low).pow(2).sum() / total) if total > 0 else 0.0


def _loss_fn(net: AttiqaNet, weights: Dict[str, float], views: int,
             targets: Optional[Dict[str, float]] = None) -> AttiqaLoss:
    # Same network object, frozen in place (the report never trains it).
    return AttiqaLoss(weights=weights, targets=targets, checkpoint=net, views=views, check_inputs=False)


def bounded_attack(
    net: AttiqaNet,
    images: torch.Tensor,
    attribute: str,
    eps: float,
    *,
    steps: int = 60,
    views: int = 0,
    lr: Optional[float] = None,
    seed: int = 0,
) -> torch.Tensor:
    """Adam on the pixels asking for ``attribute`` only, within ``|x - images| <= eps``.

    The perturbation starts at zero and is projected back into the L-infinity ball and
    into [0, 1] after every step (``lr`` default ``eps / 4``). ``views`` is passed to
    :class:`AttiqaLoss` (random views averaged, drawn from a generator seeded with
    ``seed``; the caller's global random state is restored).

    Shape: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``, detached.
    """
    weights = {a: float(a == attribute) for a in ATTRIBUTES}
    loss_fn = _loss_fn(net, weights, views)
    x0 = images.detach()
    delta = torch.zeros_like(x0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr if lr is not None else eps / 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(x0 + delta).backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
                delta.copy_((x0 + delta).clamp(0, 1) - x0)
    return (x0 + delta).detach()


def _way(before: torch.Tensor, after: torch.Tensor, goal: torch.Tensor) -> float:
    """Fraction of the way from ``before`` to ``goal`` that ``after`` went (ratio of means)."""
    need = float((goal - before).mean())
    return float((after - before).mean()) / need if abs(need) > 1e-12 else math.nan


def attack_rows(
    net: AttiqaNet,
    clean: torch.Tensor,
    *,
    eps_list: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
    views: int = 0,
    steps: int = 60,
    attributes: Sequence[str] = ATTRIBUTES,
    seed: int = 0,
) -> Tuple[List[dict], Dict[str, torch.Tensor]]:
    """Attack every attribute at every radius, starting from ``clean`` degraded along it.

    Returns rows (``attribute``, ``eps_255``, ``views``, ``score_gain``, ``fix_gain``,
    ``gain_vs_fix`` = score_gain / fix_gain, ``measure_way`` = how far the independent
    measure moved towards the clean photo's value, ``psnr_db``, ``hf_fraction``;
    ``clip_fix_vs_fix`` and ``clip_fix_measure_way``: the same two figures for
    :func:`clipped_fix`, the honest partial fix within the same radius) and, per
    attribute, ``(4, 3, H, W)`` strips of the first photo: degraded | attacked at the
    middle radius | perturbation x 8 around grey | clean. Scores are read the plain way
    (no views) whatever ``views`` the attack optimised.
    """
    device = next(net.parameters()).device
    clean = clean.to(device)
    rows, strips = [], {}
    with torch.no_grad():
        s_clean = net(clean, check=False).float()
        m_clean = handcrafted_scores(clean).cpu()
    for attr in attributes:
        a = ATTRIBUTES.index(attr)
        family, strength = ATTACK_DEGRADATIONS[attr]
        # Degradations draw from a CPU generator: degrade on the CPU, score on the device.
        deg = degrade(clean.cpu(), attr, family, strength, torch.Generator().manual_seed(seed)).to(device)
        with torch.no_grad():
            s_deg = net(deg, check=False).float()
            m_deg = handcrafted_scores(deg).cpu()
        fix_gain = float((s_clean[:, a] - s_deg[:, a]).mean())
        for i, eps in enumerate(eps_list):
            adv = bounded_attack(net, deg, attr, eps, steps=steps, views=views, seed=seed)
            honest = clipped_fix(deg, clean, eps)
            with torch.no_grad():
                gain, honest_gain = (float((net(x, check=False).float()[:, a] - s_deg[:, a]).mean())
                                     for x in (adv, honest))
            rows.append({
                "section": "attack", "attribute": attr, "family": family, "eps_255": round(eps * 255, 3),
                "views": views, "steps": steps, "photos": len(clean),
                "score_start": float(s_deg[:, a].mean()), "score_gain": gain, "fix_gain": fix_gain,
                "gain_vs_fix": gain / fix_gain if fix_gain > 1e-6 else math.nan,
                "measure_way": _way(m_deg[:, a], handcrafted_scores(adv).cpu()[:, a], m_clean[:, a]),
                "psnr_db": float(psnr(adv, deg).mean()),
                "hf_fraction": high_frequency_fraction((adv - deg).cpu()),
                "clip_fix_vs_fix": honest_gain / fix_gain if fix_gain > 1e-6 else math.nan,
                "clip_fix_measure_way": _way(m_deg[:, a], handcrafted_scores(honest).cpu()[:, a], m_clean[:, a]),
            })
            if i == len(eps_list) // 2:
                strips[attr] = torch.stack([deg[0], adv[0], (0.5 + 8 * (adv[0] - deg[0])).clamp(0, 1),
                                            clean[0]]).cpu()
    return rows, strips
