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
on its device and leaves the global random state untouched. The three parts live in
:mod:`pretrain.robustness_anchors`, :mod:`pretrain.robustness_attacks` and
:mod:`pretrain.robustness_generator`; every name is importable from here.
"""

from __future__ import annotations

from .robustness_anchors import ANCHOR_RULES, anchor_images, check_anchors
from .robustness_attacks import (ATTACK_DEGRADATIONS, INDEPENDENT_MEASURES, attack_rows, bounded_attack,
                                 clipped_fix, high_frequency_fraction, psnr)
from .robustness_generator import TinyGenerator, colour_cast, generator_probe

__all__ = [
    "ANCHOR_RULES",
    "ATTACK_DEGRADATIONS",
    "INDEPENDENT_MEASURES",
    "anchor_images",
    "check_anchors",
    "bounded_attack",
    "attack_rows",
    "clipped_fix",
    "TinyGenerator",
    "generator_probe",
    "high_frequency_fraction",
    "colour_cast",
    "psnr",
]
