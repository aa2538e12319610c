"""The CLIP teacher: prompts, their selection, and pseudo-labels (ATTIQA stages 1 and 2).

- prompts: :mod:`~pretrain.clip.prompts` (candidates, the default set, the YAML format),
  :mod:`~pretrain.clip.prompt_proxy` (the degradation proxy task) and
  :mod:`~pretrain.clip.select_prompts` (``attiqa-pretrain select-prompts``);
- the teacher: :mod:`~pretrain.clip.model` (which open_clip model and weights, the
  ``clip`` config section) and :mod:`~pretrain.clip.teacher` (features, pseudo-labels);
- labelling: :mod:`~pretrain.clip.label` (``attiqa-pretrain label``),
  :mod:`~pretrain.clip.label_job` (the sharded, resumable work),
  :mod:`~pretrain.clip.label_records` (plan, manifest, rescoring) and
  :mod:`~pretrain.clip.label_store` (the on-disk format training reads).

Built on :mod:`pretrain.degrade` and :mod:`pretrain.metrics`; the synthetic teacher and
this one do not import each other.
"""
