"""The shipped configs (YAML recipes), installed as the package ``attiqa_configs``.

In a clone they are the files of ``configs/``; in an installed copy they are package data
of ``attiqa_configs``. :func:`attiqa_train.config.resolve_config_path` finds one by name
(``--config pretrain_synthetic``) as well as by path.
"""
