"""attiqa_train: the training plumbing that ``pretrain`` and ``enhancement`` share.

Imports ``attiqa_loss`` only (never ``pretrain`` or ``enhancement``), so a change here
reaches every trainer the same way, and a change inside one application reaches no other.

Modules:

- :mod:`attiqa_train.loop`: the skeleton (:class:`~attiqa_train.loop.TrainingRun`,
  :func:`~attiqa_train.loop.run_steps`).
- :mod:`attiqa_train.config`: YAML -> typed dataclasses with ``--set`` overrides.
- :mod:`attiqa_train.distributed`: one process or ``torchrun`` ranks.
- :mod:`attiqa_train.rundir` / :mod:`attiqa_train.lock`: run folders, their lock, the resume rules.
- :mod:`attiqa_train.state`: the resumable ``state.pt``.
- :mod:`attiqa_train.sampling`: step-seeded randomness and batches.
- :mod:`attiqa_train.optim`: AdamW, warmup-cosine schedule, precision.
- :mod:`attiqa_train.ema`: weight averaging.
- :mod:`attiqa_train.logger`: TensorBoard runs.
- :mod:`attiqa_train.files`: atomic JSON / CSV writers.

Nothing is imported here, so ``import attiqa_train.files`` stays light.
"""
