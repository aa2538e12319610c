"""ATTIQA pretraining: prompt selection, CLIP pseudo-labels, ranking training, MOS fine-tuning.

Entry point: ``attiqa-pretrain`` (:mod:`pretrain.cli`). Shared training infrastructure
(configs, distributed execution, resumable state) lives here too and is reused by
:mod:`enhancement`.
"""
