"""Hardening's loss terms and adversarial twins (see :mod:`pretrain.training.hardening`).

The edge-pair terms (:func:`edge_ranking_loss` on the sharpness logits,
:func:`edge_invariance_loss` on the other four scores); adversarial examples
(:func:`craft_adversarial`: random start in an L-infinity ball, then sign-gradient
steps on the input only; :func:`adversarial_twins`: which images get a twin, which
attribute it attacks and at what radius, drawn from the generator passed in) and the
term that forbids a twin's scores to rise (:func:`no_gain_loss`, its bound optionally
raised to the scores of :func:`clipped_fix`, the honest partial fix that the robustness
report reads attacks against too); :func:`frozen_batchnorm`, BatchNorm in eval mode for
the large anchors' forward pass; and the input-gradient penalty (:func:`first_order_gain`,
:func:`sensitivity_penalty`): the gain an L-infinity perturbation of radius eps earns to
first order, ``eps * ||d logit / d x||_1``, made differentiable in the parameters (double
backward).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from attiqa_loss.attributes import ATTRIBUTES

from .hardening import HardeningConfig

__all__ = ["TONE_FREE_ATTRIBUTES", "adversarial_twins", "alignment_loss", "clipped_fix", "craft_adversarial",
           "edge_invariance_loss", "edge_ranking_loss", "first_order_gain", "frozen_batchnorm", "no_gain_loss",
           "remove_tone", "sensitivity_penalty"]


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


def no_gain_loss(adv_scores: torch.Tensor, start_scores: torch.Tensor,
                 attacked: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``relu(s(x + delta) - s(x))`` over images and attributes; ``s(x)`` is detached.
    ``attacked`` ``(K,)``: only each twin's attacked attribute counts (the others may move).
    ``start_scores`` may be any bound, such as the elementwise maximum of the start's and
    its clipped fix's scores (``hardening.no_gain_clipped_fix``).

    Shape: ``(K, 5)`` x2 -> scalar (0 when ``K == 0``)."""
    if adv_scores.numel() == 0:
        return adv_scores.sum() * 0.0
    rise = F.relu(adv_scores - start_scores.detach())
    if attacked is not None:
        rise = rise.gather(1, attacked.view(-1, 1).to(rise.device))
    return rise.mean()


def clipped_fix(degraded: torch.Tensor, clean: torch.Tensor, eps: Union[float, torch.Tensor]) -> torch.Tensor:
    """The real fix cut to the attack's ball: ``degraded + clamp(clean - degraded, -eps, eps)``.

    A genuine partial restoration inside the same L-infinity ball an attack may use: the
    most that ``eps`` can honestly earn along the way back to the clean photo. Training
    bounds a twin's scores by it (``hardening.no_gain_clipped_fix``, one radius per
    image); the robustness report reads an attack's gain against it
    (:func:`pretrain.diagnostics.robustness_attacks.attack_rows`: an attack that earns
    far more than it, with an independent measure that moves far less, found a pattern).
    Shape: ``(B, 3, H, W)`` x2, eps a float or ``(B,)`` -> ``(B, 3, H, W)``.
    """
    if isinstance(eps, torch.Tensor):
        eps = eps.to(degraded).view(-1, 1, 1, 1)
    return degraded + (clean - degraded).clamp(-eps, eps)


def adversarial_twins(plain: nn.Module, h: HardeningConfig, x: torch.Tensor, targets: Optional[torch.Tensor],
                      candidates: List[int], g: torch.Generator, device: torch.device, use_amp: bool):
    """Pick ``h.adversarial`` of ``candidates`` (indices into ``x``) and craft their twins.

    Each twin attacks its image's ``targets`` entry with probability ``h.adv_target_prob``
    (a random attribute otherwise, or always when ``targets`` is None) at a radius drawn
    from ``[eps/2, eps]``. Returns ``(indices (K,), twins (K, 3, H, W) on device,
    attacked attributes (K,), radii (K,))``."""
    pick, attr = _pick_attacked(h, h.adversarial, targets, candidates, g)
    n = len(pick)
    eps = h.adv_eps / 255 * (0.5 + 0.5 * torch.rand(n, generator=g))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        twins = craft_adversarial(plain, x[pick].to(device), attr, eps, g, steps=h.adv_steps)
    return pick, twins, attr, eps


def _pick_attacked(h: HardeningConfig, n_wanted: int, targets: Optional[torch.Tensor], candidates: List[int],
                   g: torch.Generator):
    """Which ``candidates`` are attacked and along which attribute (``adv_target_prob`` of
    them along their ``targets`` entry, the rest along a random one)."""
    n = min(n_wanted, len(candidates))
    pick = torch.tensor(candidates)[torch.randperm(len(candidates), generator=g)[:n]]
    own = torch.rand(n, generator=g) < h.adv_target_prob
    random_attr = torch.randint(len(ATTRIBUTES), (n,), generator=g)
    attr = torch.where(own, targets[pick], random_attr) if targets is not None else random_attr
    return pick, attr


def first_order_gain(net: nn.Module, images: torch.Tensor, attribute: torch.Tensor, eps: float, *,
                     on_scores: bool = False) -> torch.Tensor:
    """``eps * ||d logit_a / d x||_1`` per image: what the best L-infinity perturbation of
    radius ``eps`` raises logit ``a`` by, to first order (a one-step sign attack earns
    exactly this on a locally linear model). ``on_scores``: of the score
    ``sigmoid(logit_a)`` instead, which a network can flatten by saturating the sigmoid
    (scores pinned at 0 or 1), so the penalty is taken on the logits.

    Differentiable in ``net``'s parameters (the input gradient is built with
    ``create_graph=True``), so it can be trained down (double backward). ``net`` maps
    images to logits ``(B, 5)``; ``attribute`` ``(B,)`` indexes the logit.

    Shape: images ``(B, 3, H, W)``, attribute ``(B,)`` -> ``(B,)``.
    """
    return eps * _input_gradient(net, images, attribute, on_scores=on_scores).abs().flatten(1).sum(1)


def _input_gradient(net: nn.Module, images: torch.Tensor, attribute: torch.Tensor, *,
                    on_scores: bool = False) -> torch.Tensor:
    """``d logit_a / d x`` (of ``sigmoid(logit_a)`` with ``on_scores``) per image, built with
    ``create_graph=True`` so that a term on it trains the parameters (double backward).

    Shape: images ``(B, 3, H, W)``, attribute ``(B,)`` -> ``(B, 3, H, W)``."""
    x = images.detach().requires_grad_(True)
    out = net(x).float()
    if on_scores:
        out = torch.sigmoid(out)
    chosen = out.gather(1, attribute.view(-1, 1).to(out.device)).sum()
    (grad,) = torch.autograd.grad(chosen, x, create_graph=True)
    return grad


def sensitivity_penalty(plain: nn.Module, h: HardeningConfig, x: torch.Tensor, targets: Optional[torch.Tensor],
                        candidates: List[int], g: torch.Generator, device: torch.device) -> torch.Tensor:
    """The input-gradient penalty of ``h.sensitivity`` of ``candidates`` (indices into ``x``):
    mean of ``relu(first_order_gain - h.sensitivity_margin)`` of the logits at radius
    ``h.sensitivity_eps / 255``,
    the attribute chosen as for the twins (``adv_target_prob``). BatchNorm runs on its
    running statistics (:func:`frozen_batchnorm`), as an attack at inference sees it.

    Shape: x ``(N, 3, H, W)`` -> scalar."""
    pick, attr = _pick_attacked(h, h.sensitivity, targets, candidates, g)
    with frozen_batchnorm(plain):
        gain = first_order_gain(plain, x[pick].to(device), attr, h.sensitivity_eps / 255)
    return F.relu(gain - h.sensitivity_margin).mean()


#: attributes whose honest fix carries no tone change under ``hardening.alignment_tone_free``
TONE_FREE_ATTRIBUTES = ("sharpness", "noisiness")


def remove_tone(d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``d`` minus its least-squares fit ``a + b * x``, per image and channel.

    What is left of a change ``d`` of the image ``x`` once a global shift and a global
    scaling of its values (exposure, linear contrast) are taken out. The result sums to
    zero and is orthogonal to ``x``, per image and channel.

    Shape: d, x ``(N, C, H, W)`` -> ``(N, C, H, W)``."""
    xc = x - x.mean((-2, -1), keepdim=True)
    dc = d - d.mean((-2, -1), keepdim=True)
    b = (dc * xc).sum((-2, -1), keepdim=True) / (xc.pow(2).sum((-2, -1), keepdim=True) + 1e-12)
    return dc - b * xc


def alignment_loss(plain: nn.Module, h: HardeningConfig, x: torch.Tensor, targets: torch.Tensor,
                   candidates: List[int], group_size: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Gradient alignment with the honest fix, ``hardening.alignment``: mean of ``1 - r``.

    For ``h.alignment`` of ``candidates`` (graded synthetic levels that have a better
    level in their group: indices into ``x``), with ``g_x = d logit_a / d x`` of the
    group's degraded attribute ``a`` and ``d = clamp(best - x, -eps, eps)``
    (the honest move towards the group's least degraded level, radius
    ``h.alignment_eps / 255``)::

        r = (g_x . d) / (eps * ||g_x||_1)

    is, to first order, what the clipped fix earns over what the best L-infinity attack of
    the same radius earns (``<= 1``; the report's "attack / clipped fix" is ``1 / r``).
    With ``h.alignment_tone_free``, for sharpness and noisiness groups the move loses its
    global tone part first (:func:`remove_tone` on the start image, then the clip), so a
    detail or noise gradient earns nothing for also reading light or contrast (that move
    may step out of [0, 1] near clipped pixels: it is read as a direction, to first order).
    Scale-free: a network cannot meet it by flattening its scores (any bound on a gain
    can), only by pointing its input gradient where an honest fix goes. Differentiable
    in the parameters (double backward); BatchNorm on its running statistics.

    Shape: x ``(N, 3, H, W)``, targets ``(N,)`` -> scalar."""
    n = min(h.alignment, len(candidates))
    pick = torch.tensor(candidates)[torch.randperm(len(candidates), generator=g)[:n]]
    best = pick - pick % group_size
    eps = h.alignment_eps / 255
    start, attr = x[pick].to(device), targets[pick]
    d = x[best].to(device) - start
    if h.alignment_tone_free:
        tone_free = torch.isin(attr.cpu(), torch.tensor([ATTRIBUTES.index(a) for a in TONE_FREE_ATTRIBUTES]))
        d = torch.where(tone_free.to(device).view(-1, 1, 1, 1), remove_tone(d, start), d)
    d = d.clamp(-eps, eps)  # the clipped fix's move: clipped_fix(start, best, eps) - start
    with frozen_batchnorm(plain):
        grad = _input_gradient(plain, start, attr).float().flatten(1)
    attack = eps * grad.abs().sum(1)
    honest = (grad * d.flatten(1)).sum(1)
    # Where the gradient points against the fix (honest < 0), the attack's norm is held
    # fixed: otherwise growing the gradient in unrelated directions would lower 1 - r too.
    scale = torch.where(honest < 0, attack.detach(), attack) + 1e-3
    return (1 - honest / scale).mean()
