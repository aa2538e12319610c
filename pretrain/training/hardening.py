"""Hardening: training terms that make the scores a sound optimisation target.

A network trained only to *rank* degraded photos is free to score anything outside
that distribution, and an optimiser finds it: a flat saturated field scores "sharp",
a 4/255 pixel pattern scores like a real fix (see :mod:`pretrain.diagnostics`). These
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
  five scores to rise above the unperturbed image's (or, with ``no_gain_clipped_fix``,
  above its clipped fix's: the start moved honestly towards its group's best level).
- **Input-gradient penalty** (``sensitivity``, :func:`sensitivity_penalty`): for some
  images of the synthetic groups, the logit gain a perturbation of radius
  ``sensitivity_eps`` earns to first order (``eps * ||d logit / d x||_1``, Ross &
  Doshi-Velez 2018 penalise the input gradient's norm) may not exceed
  ``sensitivity_margin``. Unlike the twins it pushes no score up or down, only flattens
  the logits around each image. (On the scores instead, the network met the penalty by
  saturating the sigmoid: every score 0 or 1.)
- **Gradient alignment** (``alignment``, :func:`alignment_loss`): for some graded
  images, the share of the first-order attack's gain that the honest fix clipped to the
  same radius earns, ``(g . d) / (eps ||g||_1)``, is pulled towards 1. Scale-free: it
  asks the input gradient to point where a real fix goes, not the scores to flatten.
  ``alignment_tone_free`` takes the global tone part (:func:`remove_tone`) out of the
  sharpness and noisiness fixes first.

This module holds the config section (:class:`HardeningConfig`, :func:`check_hardening`)
and imports neither of the others: the images are drawn in
:mod:`pretrain.training.hardening_anchors` (with the thresholds of their labels); the
loss terms, the adversarial twins and
:func:`~pretrain.training.hardening_terms.clipped_fix` are in
:mod:`pretrain.training.hardening_terms`, which reads this config.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HardeningConfig", "check_hardening"]


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
    #: the no-gain term covers only the attribute each twin attacked (the other four
    #: scores may move with the twin: no pull of every score down at once)
    no_gain_attacked_only: bool = False
    #: the no-gain bound is the higher of the start's scores and those of the start moved
    #: towards its group's least degraded level, clipped to the twin's radius (an honest
    #: partial fix): a twin may gain what an honest change of its size gains, no more.
    #: Needs the synthetic teacher (only its groups have a better level).
    no_gain_clipped_fix: bool = False
    #: extra anchors per step at ``large_anchor_size``, scored in a forward pass of their
    #: own with BatchNorm in eval mode (weight: ``anchor_weight``; logged as anchor_large)
    large_anchors: int = 0
    #: side of the large anchors in pixels (>= 32); a flat field this large has deep
    #: cells that never see the border, unlike one at the crop size
    large_anchor_size: int = 256
    #: flat-field anchors also get the positive labels: bright ones brightness 1,
    #: saturated ones colourfulness 1 (thresholds ``BRIGHT``, ``SATURATED``)
    full_labels: bool = False
    #: images per step (graded levels of the synthetic groups, else CLIP crops) whose
    #: first-order attack gain is penalised (input-gradient penalty; a double backward)
    sensitivity: int = 0
    #: weight of that penalty
    sensitivity_weight: float = 1.0
    #: the attack radius it is measured at, in 1/255 units
    sensitivity_eps: float = 4.0
    #: first-order logit gain allowed before the penalty starts (a score moves at most a
    #: quarter of its logit: the sigmoid's largest slope)
    sensitivity_margin: float = 0.25
    #: graded synthetic images per step whose input gradient (of their group's degraded
    #: attribute) is pulled towards the honest fix's direction, scale-free
    #: (:func:`alignment_loss`; a double backward; synthetic teacher only)
    alignment: int = 0
    #: weight of that term
    alignment_weight: float = 1.0
    #: the radius the honest fix is clipped to, in 1/255 units
    alignment_eps: float = 4.0
    #: sharpness and noisiness fixes lose their global tone part (a + b * x per image and
    #: channel) before the clip, so the term does not reward reading light or contrast
    alignment_tone_free: bool = False


def check_hardening(h: HardeningConfig, batch: int) -> None:
    """Raise ``ValueError`` naming the key and value of an invalid setting (``batch``: the batch size)."""
    for key in ("anchors", "adversarial", "edge_pairs", "large_anchors", "sensitivity", "alignment"):
        if getattr(h, key) < 0:
            raise ValueError(f"hardening.{key} must be >= 0, got {getattr(h, key)}")
    if h.adversarial > batch:
        raise ValueError(f"hardening.adversarial must be <= train.batch_size ({batch}), got {h.adversarial}")
    if h.sensitivity > batch:
        raise ValueError(f"hardening.sensitivity must be <= train.batch_size ({batch}), got {h.sensitivity}")
    if h.alignment > batch:
        raise ValueError(f"hardening.alignment must be <= train.batch_size ({batch}), got {h.alignment}")
    for key in ("adv_eps", "sensitivity_eps", "alignment_eps"):
        if not 0 < getattr(h, key) <= 255:
            raise ValueError(f"hardening.{key} must be in (0, 255] (1/255 units), got {getattr(h, key)}")
    if h.large_anchor_size < 32:
        raise ValueError(f"hardening.large_anchor_size must be >= 32 (pixels), got {h.large_anchor_size}")
    if h.adv_steps < 1:
        raise ValueError(f"hardening.adv_steps must be >= 1, got {h.adv_steps}")
    if not 0 <= h.adv_target_prob <= 1:
        raise ValueError(f"hardening.adv_target_prob must be in [0, 1], got {h.adv_target_prob}")
    for key in ("anchor_weight", "no_gain", "edge_invariance", "edge_margin", "sensitivity_weight",
                "sensitivity_margin", "alignment_weight"):
        if getattr(h, key) < 0:
            raise ValueError(f"hardening.{key} must be >= 0, got {getattr(h, key)}")
