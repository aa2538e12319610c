"""The config of ``attiqa-pretrain train`` (YAML sections -> typed dataclasses).

Sections: ``model`` (timm backbone), ``synthetic`` and ``clip`` (the two teachers),
``loss`` (ranking, calibration, consistency, specificity weights), ``hardening``
(:mod:`pretrain.training.hardening`), ``train`` (optimisation, intervals, device) and ``val``
(held-out SRCC during training). Bad values fail when the config is read, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from attiqa_loss.checks import MIN_SIZE
from attiqa_train.config import AMP_VALUE_ALIASES, check_minimums, check_train_minimums

from .hardening import HardeningConfig

__all__ = ["ModelConfig", "SyntheticConfig", "ClipTeacherConfig", "RankingLossConfig", "PretrainTrainConfig",
           "PretrainValConfig", "PretrainConfig"]


@dataclass
class ModelConfig:
    backbone: str = "resnet10t"
    #: load ImageNet weights through timm (needs network, or ``pretrained_file``)
    pretrained: bool = False
    #: local weight file for the backbone (timm ``pretrained_cfg_overlay={"file": ...}``)
    pretrained_file: Optional[str] = None
    #: anti-aliased downsampling in the backbone (timm ``aa_layer``): null, "avg" or "blur"
    aa_layer: Optional[str] = None
    #: the backbone sees the luminance with its mean removed and divided by its contrast
    #: (``(Y - mean Y) / sqrt(var Y + 0.05^2)``) and the chroma ``x - Y`` at its absolute size
    #: (a fixed scale, not divided by the contrast); the heads
    #: get the mean luminance, the contrast and the log of their ratio beside the features
    #: (``AttiqaNet(normalize_tone=True)``): detail and noise cannot read exposure or contrast
    normalize_tone: bool = False
    #: with ``normalize_tone``: the chroma the backbone sees has its per-image mean removed,
    #: so a uniform colour cast reaches no score (``AttiqaNet(centre_chroma=True)``);
    #: colourfulness then reads the spread of the colours
    centre_chroma: bool = False
    #: start from this exported quality model (``.safetensors``, or ``default``: the one
    #: embedded in the package, e.g. to harden it by fine-tuning): its backbone, heads and BatchNorm
    #: statistics replace the fresh network's; ``backbone``, ``aa_layer`` and
    #: ``normalize_tone`` must match it (``centre_chroma`` may differ: it adds no weights)
    init_checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        # The exported checkpoint stores this name and its loader only accepts names that
        # timm.list_models() lists (attiqa_loss.checkpoint.check_backbone_name): refuse the
        # others now rather than after training, when the model could not be saved.
        from attiqa_loss.checkpoint import check_backbone_name

        try:
            check_backbone_name(self.backbone, "model.backbone")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.centre_chroma and not self.normalize_tone:
            raise ValueError("model.centre_chroma needs model.normalize_tone: true (it centres the chroma that "
                             "tone normalisation hands the backbone)")


@dataclass
class SyntheticConfig:
    enabled: bool = True
    #: folders of pristine photos (``--images`` replaces this list)
    images: List[str] = field(default_factory=list)
    #: every N-th photo (sorted by path) is held out for validation; 0 = none
    holdout_every: int = 5
    max_side: int = 768
    crop: int = 192
    levels: int = 3
    min_gap: float = 0.15
    nuisance_prob: float = 0.8
    scale_range: List[float] = field(default_factory=lambda: [0.5, 1.0])
    #: ``{attribute: [family, ...]}`` replacing that attribute's trained families (any
    #: family of pretrain/degrade/families.py); attributes left out keep the defaults
    families: Dict[str, List[str]] = field(default_factory=dict)
    #: ``{attribute: weight}``: how likely each attribute is to be the nuisance (default 1)
    nuisance_weights: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_minimums("synthetic", self, crop=MIN_SIZE, max_side=1, holdout_every=0)


@dataclass
class ClipTeacherConfig:
    enabled: bool = False
    #: output folder of ``attiqa-pretrain label`` (``--labels`` sets this and enables the teacher)
    labels: Optional[str] = None
    #: fraction of each batch drawn from CLIP-labelled photos when both teachers are on
    fraction: float = 0.5
    #: crop side when the clip teacher runs alone (with both teachers, ``synthetic.crop``)
    crop: int = 224
    max_side: int = 512

    def __post_init__(self) -> None:
        check_minimums("clip", self, crop=MIN_SIZE, max_side=1)


@dataclass
class RankingLossConfig:
    ranking: float = 1.0
    calibration: float = 0.2
    consistency: float = 0.5
    specificity: float = 1.0
    margin: float = 0.5
    delta: float = 0.05


@dataclass
class PretrainTrainConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    #: bfloat16 autocast on CUDA devices that support it, never on CPU (``attiqa_train.optim.use_bf16``)
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    log_every: int = 20
    val_every: int = 500
    state_every: int = 250
    #: store the exported checkpoint in float16 (half the size)
    export_fp16: bool = False

    #: earlier spellings of renamed keys (still read from config files and --set)
    KEY_ALIASES: ClassVar[Dict[str, str]] = {"checkpoint_every": "state_every"}
    #: earlier values of keys shared with attiqa-enhance (its ``amp: auto``, ``off``, ``bf16``)
    VALUE_ALIASES: ClassVar[Dict[str, Dict[Any, Any]]] = {"amp": AMP_VALUE_ALIASES}

    def __post_init__(self) -> None:
        # The rules of attiqa_train.config.TRAIN_MINIMUMS (lr, weight_decay: torch's own, >= 0;
        # lr 0 keeps the weights, as a test of model.init_checkpoint does), said now instead of
        # after the data scan, naming the key; the ranking loss needs pairs: batch_size >= 4.
        check_train_minimums(self, batch_size=4, threads=0)


@dataclass
class PretrainValConfig:
    levels: int = 6
    max_images: int = 12
    max_side: int = 384

    def __post_init__(self) -> None:
        check_minimums("val", self, levels=2, max_images=0, max_side=MIN_SIZE)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    clip: ClipTeacherConfig = field(default_factory=ClipTeacherConfig)
    loss: RankingLossConfig = field(default_factory=RankingLossConfig)
    hardening: HardeningConfig = field(default_factory=HardeningConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    val: PretrainValConfig = field(default_factory=PretrainValConfig)
