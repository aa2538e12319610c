"""Graded, single-attribute degradations (docs/method.md, sections 3 and 6).

:mod:`pretrain.degrade.families` holds the table of families (``FAMILIES``),
``degrade`` and the contrast, brightness and colourfulness families; the sharpness
families are in :mod:`pretrain.degrade.sharpness`, the noisiness ones in
:mod:`pretrain.degrade.noise`, and the filters they share in
:mod:`pretrain.degrade.filters`. Imports no other part of :mod:`pretrain`.
"""
