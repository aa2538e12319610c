"""MOS fine-tuning and evaluation (ATTIQA stage 4, docs/method.md, section 7).

:mod:`~pretrain.mos.model` (the quality head, its file format, features and ridge fit),
:mod:`~pretrain.mos.data` (the ``path,mos`` CSV and the split protocol),
:mod:`~pretrain.mos.config` (the config sections), :mod:`~pretrain.mos.report` (the
result tables), and the commands :mod:`~pretrain.mos.finetune`
(``attiqa-pretrain finetune``) and :mod:`~pretrain.mos.evaluate`
(``attiqa-pretrain evaluate``). Built on :mod:`pretrain.metrics`; it reads a trained
checkpoint, not the training code.
"""
