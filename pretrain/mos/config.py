"""The config of ``attiqa-pretrain finetune`` (and the sections ``evaluate`` shares):
the MOS dataset, how the head is fitted, and the split protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

__all__ = ["MosDataSection", "FinetuneSection", "EvalSection", "FinetuneConfig"]


@dataclass
class MosDataSection:
    """The MOS dataset.

    Attributes:
        csv: ``path,mos`` CSV.
        images: folder relative paths resolve against; null = the CSV's folder.
        max_side: images are downscaled so the longer side is at most this (null = never).
    """

    csv: Optional[str] = None
    images: Optional[str] = None
    max_side: Optional[int] = 1024


@dataclass
class FinetuneSection:
    """How the head is fitted.

    Attributes:
        mode: "probe" (frozen backbone, ridge) or "full" (fine-tune backbone + head).
        ridge_alphas: per-sample ridge penalties tried by k-fold CV (probe).
        cv_folds: folds of that CV (probe).
        steps, batch_size, lr, head_lr, weight_decay, crop, workers: full fine-tuning
            (AdamW, cosine decay, L1 on MOS / std, random ``crop`` x ``crop`` crops with
            horizontal flips; ``workers`` null = min(4, CPU count)).
        seed: randomness of full fine-tuning (crops, order).
        save_model: also fit on every row and save mos_model.safetensors.
    """

    mode: Literal["probe", "full"] = "probe"
    ridge_alphas: List[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    cv_folds: int = 5
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-5
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    crop: int = 384
    workers: Optional[int] = None
    seed: int = 0
    save_model: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.crop < 32:
            raise ValueError(f"need steps >= 1, batch_size >= 1, crop >= 32; got {self.steps}, {self.batch_size}, {self.crop}")


@dataclass
class EvalSection:
    """The split protocol: ``splits`` random partitions, ``test_fraction`` held out, seeds ``seed + s``."""

    splits: int = 10
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class FinetuneConfig:
    checkpoint: Optional[str] = None
    device: str = "auto"
    data: MosDataSection = field(default_factory=MosDataSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    eval: EvalSection = field(default_factory=EvalSection)
