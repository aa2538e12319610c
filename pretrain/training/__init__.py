"""``attiqa-pretrain train``: the attribute-aware network and the terms that harden it (docs/method.md, section 6).

:mod:`~pretrain.training.train` is the command, :mod:`~pretrain.training.config` its
config, :mod:`~pretrain.training.step` one optimisation step,
:mod:`~pretrain.training.objectives` the ranking and calibration terms and
:mod:`~pretrain.training.teachers` the two teachers' images. Hardening:
:mod:`~pretrain.training.hardening` (the config section),
:mod:`~pretrain.training.hardening_anchors` (anchor images and edge pairs) and
:mod:`~pretrain.training.hardening_terms` (the loss terms, the adversarial twins and
``clipped_fix``).

Built on :mod:`pretrain.degrade`, :mod:`pretrain.synthetic` and :mod:`pretrain.clip`
(the labels it reads); it never imports :mod:`pretrain.diagnostics`
(tests/test_packaging.py).
"""
