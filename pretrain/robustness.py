"""Is a quality model a good *optimisation target*? Anchors, bounded attacks, a generator.

A loss is only as good as its optimum. The validity report (:mod:`pretrain.validity_report`)
asks whether scores rank degraded photos; this module asks what an optimiser gets when it
pushes them up:

1. **Anchors** (:func:`anchor_images`, :data:`ANCHOR_RULES`): images whose attribute
   values are physical facts. A flat field has no detail and no contrast, black is dark,
   grey has no colour, a field of pure noise is noisy, and a step edge is sharper than
   the same edge blurred.
2. **Bounded attacks** (:func:`bounded_attack`): Adam on the pixels of a photo degraded
   along one attribute, asking for that attribute only, projected to an L-infinity ball
   of radius ``eps``. The score gain is compared with the gain of the real fix (the
   clean photo), and an independent handcrafted measure of the same attribute
   (:func:`pretrain.handcrafted.handcrafted_scores`) says whether the attribute moved.
3. **Generator probe** (:func:`generator_probe`): a tiny residual conv net trained on
   degraded crops with the loss alone, and with L1 to the clean crop plus the loss. A
   loss with a degenerate optimum turns every image into a flat saturated field.

Every function takes a scorer network (``(B, 3, H, W)`` in [0, 1] -> ``(B, 5)``), runs
on its device and leaves the global random state untouched.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaLoss, AttiqaNet

from .degradations import _separable_gaussian, degrade
from .handcrafted import handcrafted_scores, opponent_channels

__all__ = [
    "ANCHOR_RULES",
    "ATTACK_DEGRADATIONS",
    "INDEPENDENT_MEASURES",
    "anchor_images",
    "check_anchors",
    "bounded_attack",
    "attack_rows",
    "TinyGenerator",
    "generator_probe",
    "high_frequency_fraction",
    "colour_cast",
    "psnr",
]

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


def _loss_fn(net: AttiqaNet, weights: Dict[str, float], views: int) -> AttiqaLoss:
    # Same network object, frozen in place (the report never trains it).
    return AttiqaLoss(weights=weights, checkpoint=net, views=views, check_inputs=False)


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
    measure moved towards the clean photo's value, ``psnr_db``, ``hf_fraction``) and, per
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
            with torch.no_grad():
                s_adv = net(adv, check=False).float()
            gain = float((s_adv[:, a] - s_deg[:, a]).mean())
            rows.append({
                "section": "attack", "attribute": attr, "family": family, "eps_255": round(eps * 255, 3),
                "views": views, "steps": steps, "photos": len(clean),
                "score_start": float(s_deg[:, a].mean()), "score_gain": gain, "fix_gain": fix_gain,
                "gain_vs_fix": gain / fix_gain if fix_gain > 1e-6 else math.nan,
                "measure_way": _way(m_deg[:, a], handcrafted_scores(adv).cpu()[:, a], m_clean[:, a]),
                "psnr_db": float(psnr(adv, deg).mean()),
                "hf_fraction": high_frequency_fraction((adv - deg).cpu()),
            })
            if i == len(eps_list) // 2:
                strips[attr] = torch.stack([deg[0], adv[0], (0.5 + 8 * (adv[0] - deg[0])).clamp(0, 1),
                                            clean[0]]).cpu()
    return rows, strips


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
