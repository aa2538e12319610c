"""ATTIQA pretraining: prompt selection, CLIP pseudo-labels, ranking training, MOS fine-tuning.

Entry point: ``attiqa-pretrain`` (:mod:`pretrain.cli`). The training plumbing it shares
with :mod:`enhancement` (configs, distributed execution, resumable state, the step loop)
lives in :mod:`attiqa_train`; ``pretrain`` and ``enhancement`` do not import each other
(docs/architecture.md).

One sub-package per stage of the pipeline, each importing only the stages below it
(tests/test_packaging.py)::

    metrics        rank and linear correlations
    degrade        graded single-attribute degradations
    synthetic      the synthetic teacher        clip   prompts, the CLIP teacher, labelling
    training       attiqa-pretrain train, with its hardening terms
    mos            attiqa-pretrain finetune / evaluate
    diagnostics    attiqa-pretrain validity / robustness / verdict

``synthetic`` and ``clip`` stand side by side (neither imports the other); ``mos`` needs
no training code (it reads a checkpoint), and nothing imports ``diagnostics``.
"""
