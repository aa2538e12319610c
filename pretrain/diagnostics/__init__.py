"""Is a trained quality model sound? The validity and robustness reports and the ship rule.

- **Validity** (:mod:`~pretrain.diagnostics.validity_report`, ``attiqa-pretrain
  validity``): does each score follow its own degradation family, against the simple
  handcrafted measures of :mod:`~pretrain.diagnostics.handcrafted`?
- **Robustness** (:mod:`~pretrain.diagnostics.robustness_report`, ``attiqa-pretrain
  robustness``): what does an optimiser get when it pushes the scores up? A loss is only
  as good as its optimum:

  1. *Anchors* (:mod:`~pretrain.diagnostics.robustness_anchors`): images whose attribute
     values are physical facts. A flat field has no detail and no contrast, black is
     dark, grey has no colour, a field of pure noise is noisy, and a step edge is sharper
     than the same edge blurred.
  2. *Bounded attacks* (:mod:`~pretrain.diagnostics.robustness_attacks`): Adam on the
     pixels of a photo degraded along one attribute, asking for that attribute only,
     projected to an L-infinity ball of radius ``eps``. The score gain is compared with
     the gain of the real fix (the clean photo) and of the real fix clipped to the ball
     (:func:`pretrain.training.hardening_terms.clipped_fix`), and an independent
     handcrafted measure of the same attribute says whether the attribute moved.
  3. *Generator probe* (:mod:`~pretrain.diagnostics.robustness_generator`): a tiny
     residual conv net trained on degraded crops with the loss alone, and with L1 to the
     clean crop plus the loss. A loss with a degenerate optimum turns every image into a
     flat saturated field.

  Every function takes a scorer network (``(B, 3, H, W)`` in [0, 1] -> ``(B, 5)``), runs
  on its device and leaves the global random state untouched.
- **Ship rule** (:mod:`~pretrain.diagnostics.ship_rule`, ``attiqa-pretrain verdict``):
  PASS or FAIL for a model from what the two reports wrote; also the recipe of a
  training config (``recipe_of``) that research/trials.csv records.
- :mod:`~pretrain.diagnostics.views_probe`: does ``AttiqaLoss(views=n)`` make an
  optimiser change the attribute rather than a pixel pattern?

The top of the pipeline: it may import every other stage of :mod:`pretrain`, and none
imports it (tests/test_packaging.py).
"""
