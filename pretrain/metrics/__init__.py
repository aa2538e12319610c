"""How well predictions follow a reference: rank and linear correlations
(:mod:`pretrain.metrics.correlation`), shared by prompt selection, held-out validation,
MOS fine-tuning and the validity report. Imports no other part of :mod:`pretrain`."""
