"""ATTIQA pretraining: prompt selection, CLIP pseudo-labels, ranking training, MOS fine-tuning.

Entry point: ``attiqa-pretrain`` (:mod:`pretrain.cli`). The training plumbing it shares
with :mod:`enhancement` (configs, distributed execution, resumable state, the step loop)
lives in :mod:`attiqa_train`; ``pretrain`` and ``enhancement`` do not import each other
(docs/architecture.md).
"""
