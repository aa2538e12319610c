"""Hardening: training terms that make the scores a sound optimisation target.

A network trained only to *rank* degraded photos is free to score anything outside
that distribution, and an optimiser finds it: a flat saturated field scores "sharp",
a 4/255 pixel pattern scores like a real fix (see :mod:`pretrain.robustness`). These
terms close those doors, all off by default (``hardening`` in the pretrain config):

- **Anchors** (:func:`sample_anchors`): images whose attribute values are physical
  facts, in every batch with their labels (binary cross-entropy on the logits): a flat
  field has no detail and no contrast and is noise-free; a dark flat field is dark; a
  grey one is colourless; a smooth ramp has no detail; a field of per-pixel noise is
  noisy. Attributes with no physical value stay unlabelled (NaN). With ``full_labels`` a
  bright flat field is also well lit and a saturated one colourful, so "low-energy image"
  cannot stand for "every score low".
- **Large anchors** (``large_anchors``, ``large_anchor_size``): more anchors at a larger
  size, scored in a forward pass of their own with BatchNorm in eval mode
  (:func:`frozen_batchnorm`, as users' inference sees an image): a large flat field has
  border-free deep cells, which crop-size anchors never show the network.
- **Edge pairs** (:func:`sample_edge_pairs`): two-tone step edges that must outscore
  their blurred copies on sharpness (:func:`edge_ranking_loss`) while keeping the other
  four scores (:func:`edge_invariance_loss`).
- **Adversarial examples** (:func:`craft_adversarial`): for some images of the
  synthetic groups, a perturbation within an L-infinity ball that raises one score
  (random start and sign-gradient steps, Wong et al. 2020, "Fast is better than free").
  The perturbed image joins its group with the label of its start (an image optimised
  for a score keeps the label it had), and :func:`no_gain_loss` forbids any of its
  five scores to rise above the unperturbed image's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from attiqa_loss.attributes import ATTRIBUTES

__all__ = ["ANCHOR_KINDS", "HardeningConfig", "adversarial_twins", "check_hardening", "craft_adversarial",
           "edge_invariance_loss", "edge_ranking_loss", "frozen_batchnorm", "no_gain_loss", "sample_anchors",
           "sample_edge_pairs"]

_A = {a: i for i, a in enumerate(ATTRIBUTES)}
#: Anchor kinds drawn by :func:`sample_anchors`, with equal odds.
ANCHOR_KINDS = ("flat", "ramp", "noise")
#: A flat field this dark (largest channel) is labelled brightness 0.
DARK = 0.06
#: A flat field whose channels differ by less than this is labelled colourfulness 0.
GREY = 0.02
#: A ramp whose luminance spans this much is labelled contrast 1 (``ramp_contrast``).
RAMP_CONTRAST = 0.5
#: A flat field at least this luminous (0.299 R + 0.587 G + 0.114 B) is labelled
#: brightness 1 (``full_labels``): a mid-grey field or brighter is well lit, the
#: brightness attribute's "1 = well lit". About half the non-dark flat fields.
BRIGHT = 0.5
#: A flat field whose channels span at least this much (max - min, the saturation of
#: HSV times its value) is labelled colourfulness 1 (``full_labels``): about half the
#: non-grey, non-dark flat fields.
SATURATED = 0.5


def _u(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=g)


def sample_anchors(n: int, size: int, g: torch.Generator, *, smooth_noise_free: bool = True,
                   ramp_contrast: bool = False, full_labels: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` anchor images ``(n, 3, size, size)`` in [0, 1] and labels ``(n, 5)`` (NaN = none).

    Kinds (see the module docstring): ``flat``: a uniform field (a quarter of them grey,
    a quarter dark), labels sharpness 0, contrast 0, noisiness 1, plus brightness 0 when
    dark and colourfulness 0 when grey; ``ramp``: a linear blend of two colours across
    the image in a random direction, sharpness 0 and noisiness 1; ``noise``: a random
    mean colour plus per-pixel Gaussian noise (sigma 0.08 to 0.3, colour or luma only),
    noisiness 0. With ``smooth_noise_free=False`` flat fields and ramps carry no
    noisiness label (only noise fields teach noisiness). With ``ramp_contrast`` half the
    ramps run from a dark to a bright colour, and a ramp whose luminance spans at least
    :data:`RAMP_CONTRAST` is labelled contrast 1: global contrast without any detail, so
    contrast cannot be learnt as "local detail" from the flat fields alone. With
    ``full_labels`` a flat field whose luminance is at least :data:`BRIGHT` is also
    labelled brightness 1 and one whose channels span at least :data:`SATURATED`
    colourfulness 1 (the images and every draw are the same with or without it: only
    labels are added). Every draw comes from ``g``.
    """
    images = torch.empty(n, 3, size, size)
    labels = torch.full((n, len(ATTRIBUTES)), float("nan"))
    ramp = torch.linspace(0, 1, size)
    for i in range(n):
        kind = ANCHOR_KINDS[int(torch.randint(len(ANCHOR_KINDS), (), generator=g))]
        colour = _u(g, 3)
        r = float(_u(g))
        if r < 0.25:
            colour = colour[:1].expand(3).clone()
        elif r < 0.5:
            colour = colour * DARK * float(_u(g))
        if kind == "flat":
            images[i] = colour.view(3, 1, 1).expand(3, size, size)
            labels[i, [_A["sharpness"], _A["contrast"]]] = 0.0
            if smooth_noise_free:
                labels[i, _A["noisiness"]] = 1.0
            if float(colour.max()) < DARK:
                labels[i, _A["brightness"]] = 0.0
            if float(colour.max() - colour.min()) < GREY:
                labels[i, _A["colorfulness"]] = 0.0
            if full_labels:
                if float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) >= BRIGHT:
                    labels[i, _A["brightness"]] = 1.0
                if float(colour.max() - colour.min()) >= SATURATED:
                    labels[i, _A["colorfulness"]] = 1.0
        elif kind == "ramp":
            other = _u(g, 3)
            if ramp_contrast and float(_u(g)) < 0.5:  # dark to bright
                colour, other = colour * 0.25, 0.75 + 0.25 * other
            theta = float(_u(g)) * 2 * torch.pi
            yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
            t = (xx - 0.5) * torch.cos(torch.tensor(theta)) + (yy - 0.5) * torch.sin(torch.tensor(theta))
            t = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-6)
            images[i] = colour.view(3, 1, 1) * (1 - t) + other.view(3, 1, 1) * t
            labels[i, _A["sharpness"]] = 0.0
            if smooth_noise_free:
                labels[i, _A["noisiness"]] = 1.0
            if ramp_contrast:
                lum = 0.299 * images[i, 0] + 0.587 * images[i, 1] + 0.114 * images[i, 2]
                if float(lum.max() - lum.min()) >= RAMP_CONTRAST:
                    labels[i, _A["contrast"]] = 1.0
        else:
            mean = 0.2 + 0.6 * _u(g, 3)
            sigma = 0.08 + 0.22 * float(_u(g))
            channels = 3 if float(_u(g)) < 0.5 else 1
            noise = torch.randn((channels, size, size), generator=g).expand(3, size, size)
            images[i] = (mean.view(3, 1, 1) + sigma * noise).clamp(0, 1)
            labels[i, _A["noisiness"]] = 0.0
    return images, labels


def sample_edge_pairs(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``n`` two-tone step edges, then the same ``n`` edges blurred: ``(2n, 3, size, size)``.

    A step edge is the simplest detail there is, and a blurred copy of it has less: the
    pair teaches sharpness an order that flat-field and ramp anchors (both "no detail")
    cannot. Random colour pairs (some channel differs by >= 0.3), direction and offset;
    Gaussian blur of sigma 1.5 to 3 px. Every draw comes from ``g``.
    """
    from .degradations import degrade

    axis = torch.linspace(-0.5, 0.5, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    sharp = torch.empty(n, 3, size, size)
    for i in range(n):
        a, b = _u(g, 2, 3, 1, 1)
        if float((a - b).abs().max()) < 0.3:
            b = 1 - a
        theta = float(_u(g)) * 2 * torch.pi
        offset = (float(_u(g)) - 0.5) * 0.5
        mask = ((xx * math.cos(theta) + yy * math.sin(theta)) > offset).float()[None]
        sharp[i] = a * (1 - mask) + b * mask
    blurred = torch.cat([degrade(sharp[i : i + 1], "sharpness", "gaussian", 0.5 + 0.5 * float(_u(g)))
                         for i in range(n)])
    return torch.cat([sharp, blurred])


def edge_ranking_loss(sharpness_logits: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge ``relu(margin - (l(edge) - l(blurred edge)))`` on the sharpness *logits*,
    averaged over the pairs. Logits, not scores: flat-field anchors push both images of a
    pair towards score 0, where the sigmoid's slope would leave a score hinge no gradient.

    Shape: ``(2n,)`` sharpness logits in :func:`sample_edge_pairs` order -> scalar."""
    n = len(sharpness_logits) // 2
    return F.relu(margin - (sharpness_logits[:n] - sharpness_logits[n:])).mean()


def edge_invariance_loss(scores: torch.Tensor) -> torch.Tensor:
    """Mean ``|s(edge) - s(blurred edge)|`` over the four attributes other than sharpness:
    blurring an edge changes its detail, not its global contrast, light, colour or noise.

    Shape: ``(2n, 5)`` scores in :func:`sample_edge_pairs` order -> scalar."""
    n = len(scores) // 2
    others = [i for i, a in enumerate(ATTRIBUTES) if a != "sharpness"]
    return (scores[:n, others] - scores[n:, others]).abs().mean()


def craft_adversarial(
    net: nn.Module,
    images: torch.Tensor,
    attribute: torch.Tensor,
    eps: torch.Tensor,
    g: torch.Generator,
    *,
    steps: int = 1,
    step_size: float = 1.25,
) -> torch.Tensor:
    """Perturb ``images`` within ``|delta| <= eps`` (per image) to raise one logit each.

    ``net`` maps images to logits ``(B, 5)``; ``attribute`` ``(B,)`` is the index whose
    logit is raised. Random start in the ball (from ``g``), then ``steps`` sign-gradient
    steps of ``step_size * eps / steps``, projected back into the ball and into [0, 1].
    Only the input gets a gradient (``torch.autograd.grad``): nothing accumulates on the
    parameters, and BatchNorm running statistics are restored afterwards.

    Shape: images ``(B, 3, H, W)``, attribute/eps ``(B,)`` -> ``(B, 3, H, W)``, detached.
    """
    saved = [b.detach().clone() for b in net.buffers()]
    eps4 = eps.view(-1, 1, 1, 1).to(images)
    delta = ((torch.rand(images.shape, generator=g) * 2 - 1).to(images) * eps4)
    delta = ((images + delta).clamp(0, 1) - images)
    alpha = step_size * eps4 / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = net(images + delta).float()
        objective = logits.gather(1, attribute.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(objective, delta)
        with torch.no_grad():
            delta = torch.maximum(torch.minimum(delta + alpha * grad.sign(), eps4), -eps4)
            delta = (images + delta).clamp(0, 1) - images
    with torch.no_grad():
        for b, s in zip(net.buffers(), saved):
            b.copy_(s)
    return (images + delta).detach()


@contextmanager
def frozen_batchnorm(net: nn.Module) -> Iterator[None]:
    """Within the block, ``net``'s BatchNorm layers that are training run in eval mode:
    they normalise with their running statistics and do not update them (as inference
    sees an image). Their training mode is restored on exit, also on an exception.
    Other layers keep their mode."""
    switched = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    try:
        for m in switched:
            m.eval()
        yield
    finally:
        for m in switched:
            m.train()


def no_gain_loss(adv_scores: torch.Tensor, start_scores: torch.Tensor) -> torch.Tensor:
    """Mean of ``relu(s(x + delta) - s(x))`` over images and attributes; ``s(x)`` is detached.

    Shape: ``(K, 5)`` x2 -> scalar (0 when ``K == 0``)."""
    if adv_scores.numel() == 0:
        return adv_scores.sum() * 0.0
    return F.relu(adv_scores - start_scores.detach()).mean()


@dataclass
class HardeningConfig:
    """The ``hardening:`` section of the pretrain config (see the module docstring); all off by default."""

    #: anchor images (flat fields, ramps, noise fields) per batch, with their physical labels
    anchors: int = 0
    anchor_weight: float = 1.0
    #: flat fields and ramps are also labelled noise-free (noisiness 1); false leaves
    #: noisiness to the noise fields alone
    smooth_noise_free: bool = True
    #: step edges per batch, each with a blurred copy it must outscore on sharpness
    edge_pairs: int = 0
    #: the sharpness logit gap asked of each edge pair (weight: ``anchor_weight``)
    edge_margin: float = 1.0
    #: weight of the term keeping an edge pair's other four scores equal (blur is not contrast)
    edge_invariance: float = 0.0
    #: half the ramps run dark to bright, and wide ramps are labelled contrast 1
    ramp_contrast: bool = False
    #: images per step given an adversarial twin (one level of a synthetic group each;
    #: CLIP crops when the synthetic teacher is off)
    adversarial: int = 0
    #: largest L-infinity radius in 1/255 units; each twin's radius is drawn from [eps/2, eps]
    adv_eps: float = 8.0
    #: sign-gradient steps per twin (1 = FGSM with a random start)
    adv_steps: int = 1
    #: chance that a twin attacks its group's degraded attribute (else a random attribute)
    adv_target_prob: float = 0.5
    #: weight of the term that forbids a twin's scores to rise above its start's
    no_gain: float = 1.0
    #: extra anchors per step at ``large_anchor_size``, scored in a forward pass of their
    #: own with BatchNorm in eval mode (weight: ``anchor_weight``; logged as anchor_large)
    large_anchors: int = 0
    #: side of the large anchors in pixels (>= 32); a flat field this large has deep
    #: cells that never see the border, unlike one at the crop size
    large_anchor_size: int = 256
    #: flat-field anchors also get the positive labels: bright ones brightness 1,
    #: saturated ones colourfulness 1 (thresholds ``BRIGHT``, ``SATURATED``)
    full_labels: bool = False


def check_hardening(h: HardeningConfig, batch: int) -> None:
    """Raise ``ValueError`` naming the key and value of an invalid setting (``batch``: the batch size)."""
    for key in ("anchors", "adversarial", "edge_pairs", "large_anchors"):
        if getattr(h, key) < 0:
            raise ValueError(f"hardening.{key} must be >= 0, got {getattr(h, key)}")
    if h.adversarial > batch:
        raise ValueError(f"hardening.adversarial must be <= train.batch_size ({batch}), got {h.adversarial}")
    if not 0 < h.adv_eps <= 255:
        raise ValueError(f"hardening.adv_eps must be in (0, 255] (1/255 units), got {h.adv_eps}")
    if h.large_anchor_size < 32:
        raise ValueError(f"hardening.large_anchor_size must be >= 32 (pixels), got {h.large_anchor_size}")
    if h.adv_steps < 1:
        raise ValueError(f"hardening.adv_steps must be >= 1, got {h.adv_steps}")
    if not 0 <= h.adv_target_prob <= 1:
        raise ValueError(f"hardening.adv_target_prob must be in [0, 1], got {h.adv_target_prob}")
    for key in ("anchor_weight", "no_gain", "edge_invariance", "edge_margin"):
        if getattr(h, key) < 0:
            raise ValueError(f"hardening.{key} must be >= 0, got {getattr(h, key)}")


def adversarial_twins(plain: nn.Module, h: HardeningConfig, x: torch.Tensor, targets: Optional[torch.Tensor],
                      candidates: List[int], g: torch.Generator, device: torch.device, use_amp: bool):
    """Pick ``h.adversarial`` of ``candidates`` (indices into ``x``) and craft their twins.

    Each twin attacks its image's ``targets`` entry with probability ``h.adv_target_prob``
    (a random attribute otherwise, or always when ``targets`` is None) at a radius drawn
    from ``[eps/2, eps]``. Returns ``(indices (K,), twins (K, 3, H, W) on device)``."""
    n = min(h.adversarial, len(candidates))
    pick = torch.tensor(candidates)[torch.randperm(len(candidates), generator=g)[:n]]
    own = torch.rand(n, generator=g) < h.adv_target_prob
    random_attr = torch.randint(len(ATTRIBUTES), (n,), generator=g)
    attr = torch.where(own, targets[pick], random_attr) if targets is not None else random_attr
    eps = h.adv_eps / 255 * (0.5 + 0.5 * torch.rand(n, generator=g))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        twins = craft_adversarial(plain, x[pick].to(device), attr, eps, g, steps=h.adv_steps)
    return pick, twins
