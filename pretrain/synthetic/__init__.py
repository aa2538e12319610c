"""The synthetic teacher: pristine photos degraded at graded strengths (docs/method.md, section 6).

:mod:`pretrain.synthetic.teacher` draws the graded groups (``SyntheticTeacher``,
``apply_plan``, ``resolve_families``), :mod:`pretrain.synthetic.photos` decodes the
photos and sorts out the unusable ones, and :mod:`pretrain.synthetic.graded` asks
whether a score follows a family's graded levels (``family_srcc``: validation during
training and the validity report). Built on :mod:`pretrain.degrade` and
:mod:`pretrain.metrics`.
"""
