"""``attiqa-pretrain finetune``: fit a MOS head on pretrained ATTIQA features (docs/method.md, section 7).

Protocol: ``eval.splits`` random 80/20 train/test splits of a ``path,mos`` CSV; on each,
fit the head on the 80 % and measure SRCC, PLCC (4-parameter logistic fit, and plain)
and KRCC on the 20 %; the median over splits is the reported figure. Then (unless
``finetune.save_model: false``) the head is fitted on every row and saved as
``mos_model.safetensors`` for ``attiqa-pretrain evaluate``.

Modes: ``probe`` (frozen backbone; features computed once, closed-form ridge with the
penalty chosen by k-fold CV) or ``full`` (backbone and head trained with AdamW on random
crops; runs under torchrun with DDP).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from attiqa_loss import load_checkpoint
from attiqa_loss.io import read_image

from attiqa_train.config import add_config_arguments, config_from_args, config_to_dict, save_config
from attiqa_train.distributed import DistInfo, barrier, cleanup_distributed, env_rank, init_distributed, single_process
from attiqa_train.files import sha256_file
from attiqa_train.loop import run_steps
from attiqa_train.optim import adamw, warmup_cosine_scheduler
from attiqa_train.sampling import StepBatchSampler, random_crop_box

from ..metrics.correlation import correlations
from .config import FinetuneConfig, FinetuneSection
from .data import MosData, random_splits, read_mos_csv
from .model import MosModel, extract_features, fit_ridge, predict_images, probe_model, save_mos_model
from .report import METRICS, format_table, summarize, write_csv, write_summary

__all__ = ["DESCRIPTION", "add_arguments", "run", "train_full"]

DESCRIPTION = """Fit a MOS quality head on a pretrained ATTIQA network and measure it (docs/method.md, section 7,
in the source repository).

Input: --checkpoint (an attiqa safetensors checkpoint from `attiqa-pretrain train`) and
--csv with columns path,mos (relative paths resolve against the CSV's folder, or
--images DIR). Protocol: eval.splits random 80/20 splits (default 10), report the median
SRCC / PLCC (after a 4-parameter logistic fit; plain PLCC too) / KRCC, all higher-is-better.
Writes --out/results.csv (one row per split), summary.json (medians), predictions.csv and
mos_model.safetensors (head fitted on all rows, for `attiqa-pretrain evaluate`).

finetune.mode: probe (frozen features + ridge, fast) or full (fine-tune everything).

Example:
  attiqa-pretrain finetune --config configs/finetune_mos.yaml --checkpoint runs/train/checkpoint.safetensors \\
      --csv koniq/koniq.csv --out runs/koniq_probe"""


class _RandomCrops(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> a random ``crop`` x ``crop`` patch (maybe flipped) of image ``index``.

    The crop comes from ``seed`` alone, so batches do not depend on worker scheduling.
    """

    def __init__(self, paths: Sequence[Path], crop: int, max_side: Optional[int]) -> None:
        self.paths, self.crop, self.max_side = list(paths), crop, max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        image = read_image(self.paths[index], max_side=self.max_side)
        h, w = image.shape[-2:]
        if min(h, w) < self.crop:  # small images: upscale so a full crop fits
            scale = self.crop / min(h, w)
            image = F.interpolate(image[None], size=(max(self.crop, round(h * scale)), max(self.crop, round(w * scale))),
                                  mode="bilinear", align_corners=False)[0].clamp(0, 1)
            h, w = image.shape[-2:]
        g = torch.Generator().manual_seed(int(seed))
        top, left = random_crop_box(h, w, self.crop, g)
        patch = image[:, top : top + self.crop, left : left + self.crop]
        if bool(torch.rand((), generator=g) < 0.5):
            patch = patch.flip(-1)
        return patch, index


def train_full(
    checkpoint: str,
    data: MosData,
    section: FinetuneSection,
    *,
    max_side: Optional[int],
    info: DistInfo,
    seed: int,
    progress: bool = True,
) -> Tuple[MosModel, float]:
    """Fine-tune backbone + head on ``data`` (every rank draws its own batches under DDP).

    Returns:
        ``(model in eval mode, mean L1 loss of the last 10 % of steps)``.
    """

    net = load_checkpoint(checkpoint)
    mos = torch.from_numpy(data.mos).float()
    mos_mean, mos_std = float(mos.mean()), float(mos.std(unbiased=False)) or 1.0
    model = MosModel(net, "full", mos_mean=mos_mean, mos_std=mos_std).to(info.device).train()
    # The attribute heads play no part in the MOS prediction; DDP refuses parameters without gradients.
    model.net.heads.requires_grad_(False)
    wrapped = model
    if info.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    # The backbone at its own (small) rate, the new head at a larger one; weight decay on
    # weight tensors only (attiqa_train.optim.adamw).
    optimizer = adamw([{"params": model.net.backbone.parameters(), "lr": section.lr},
                       {"params": model.head.parameters(), "lr": section.head_lr}],
                      lr=section.lr, weight_decay=section.weight_decay)
    total = section.steps
    scheduler = warmup_cosine_scheduler(optimizer, warmup=0, total=total)
    workers = section.workers if section.workers is not None else min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        _RandomCrops(data.paths, section.crop, max_side),
        batch_sampler=StepBatchSampler(len(data), section.batch_size, seed=seed, rank=info.rank, steps=total),
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
    )
    batches = iter(loader)
    tail: List[float] = []

    def step_fn(step: int):
        images, index = next(batches)
        loss = F.l1_loss(wrapped(images.to(info.device, non_blocking=True)), mos[index].to(info.device)) / mos_std
        if step >= total - max(1, total // 10):
            tail.append(float(loss.detach()))
        return loss, {"l1": loss}

    run_steps(step_fn, start=0, steps=total, optimizer=optimizer, scheduler=scheduler,
              progress=progress and info.is_main, desc="fine-tune")
    return model.eval(), float(np.mean(tail)) if tail else float("nan")


def _split_rows(
    cfg: FinetuneConfig, data: MosData, info: DistInfo
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Per-split metric rows and per-image test predictions (rank 0; other ranks get empty lists)."""
    splits = random_splits(len(data), cfg.eval.splits, cfg.eval.test_fraction, cfg.eval.seed)
    rows, preds = [], []
    features = None
    if cfg.finetune.mode == "probe":
        net = load_checkpoint(cfg.checkpoint)
        features = extract_features(net, data.paths, max_side=cfg.data.max_side, device=info.device)
    for s, (train, test) in enumerate(splits):
        extra: Dict[str, Any] = {}
        if cfg.finetune.mode == "probe":
            ridge = fit_ridge(features[train], torch.from_numpy(data.mos[train]), cfg.finetune.ridge_alphas,
                              folds=cfg.finetune.cv_folds, seed=cfg.eval.seed + s)
            model = probe_model(net, ridge)
            with torch.no_grad():
                pred = model.predict_features(features[test].to(model.mos_mean.device)).cpu().numpy()
            extra["alpha"] = ridge["alpha"]
        else:
            model, tail_loss = train_full(cfg.checkpoint, data.subset(train), cfg.finetune, max_side=cfg.data.max_side,
                                          info=info, seed=cfg.finetune.seed + 1000 * s)
            extra["train_l1"] = tail_loss
            pred = None
            if info.is_main:
                pred = predict_images(model, [data.paths[i] for i in test], max_side=cfg.data.max_side,
                                      device=info.device).numpy()
            barrier()
        if not info.is_main:
            continue
        metrics = correlations(pred, data.mos[test])
        rows.append({"split": s, "n_train": len(train), "n_test": len(test), **metrics, **extra})
        preds += [{"split": s, "path": str(data.paths[i]), "mos": float(data.mos[i]), "prediction": float(p)}
                  for i, p in zip(test, pred)]
        print(f"split {s}: SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  KRCC {metrics['krcc']:.4f}", file=sys.stderr)
    return rows, preds


def _final_model(cfg: FinetuneConfig, data: MosData, info: DistInfo) -> Optional[MosModel]:
    if cfg.finetune.mode == "probe":
        net = load_checkpoint(cfg.checkpoint)
        features = extract_features(net, data.paths, max_side=cfg.data.max_side, device=info.device, progress=False)
        ridge = fit_ridge(features, torch.from_numpy(data.mos), cfg.finetune.ridge_alphas,
                          folds=cfg.finetune.cv_folds, seed=cfg.eval.seed)
        return probe_model(net, ridge)
    model, _ = train_full(cfg.checkpoint, data, cfg.finetune, max_side=cfg.data.max_side, info=info,
                          seed=cfg.finetune.seed + 999_983)
    return model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, help="pretrained attiqa checkpoint (.safetensors); overrides checkpoint")
    parser.add_argument("--csv", type=Path, help="path,mos CSV; overrides data.csv")
    parser.add_argument("--images", type=Path, help="folder the CSV's relative paths resolve against (default: the CSV's folder)")


def flag_values(args: argparse.Namespace) -> Dict[str, str]:
    """The config values of the ``--checkpoint``, ``--csv`` and ``--images`` flags given."""
    flags = {"checkpoint": args.checkpoint, "data.csv": args.csv, "data.images": args.images}
    return {key: str(value) for key, value in flags.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(FinetuneConfig, args, values=flag_values(args))
    if not cfg.data.csv:
        raise SystemExit("error: give --csv FILE (or data.csv): the path,mos dataset")
    if not cfg.checkpoint:
        raise SystemExit("error: give --checkpoint FILE (or checkpoint): the pretrained attiqa network")
    if not Path(cfg.checkpoint).is_file():
        raise SystemExit(f"error: checkpoint not found: {cfg.checkpoint}")
    try:
        data = read_mos_csv(cfg.data.csv, root=cfg.data.images)
        random_splits(len(data), cfg.eval.splits, cfg.eval.test_fraction, cfg.eval.seed)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if cfg.finetune.mode == "probe" and env_rank() != 0:
        return 0  # the probe is one closed-form fit: rank 0 does it alone
    try:
        info = init_distributed(cfg.device) if cfg.finetune.mode == "full" else single_process(cfg.device)
    except ValueError as exc:  # a device this machine lacks
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.out)
    try:
        rows, preds = _split_rows(cfg, data, info)
        final = _final_model(cfg, data, info) if cfg.finetune.save_model else None
        if not info.is_main:
            return 0
        columns = ["split", "n_train", "n_test", *METRICS, "logistic_fit", "alpha" if cfg.finetune.mode == "probe" else "train_l1"]
        write_csv(out / "results.csv", rows, columns)
        write_csv(out / "predictions.csv", preds, ["split", "path", "mos", "prediction"])
        summary = {
            "task": "finetune",
            "mode": cfg.finetune.mode,
            "checkpoint": str(cfg.checkpoint),
            "csv": str(cfg.data.csv),
            "n": len(data),
            "test_fraction": cfg.eval.test_fraction,
            **summarize(rows),
            "reported": "median over splits; all metrics higher-is-better",
            "model": None,
            "config": config_to_dict(cfg),
        }
        if final is not None:
            path = save_mos_model(final, out / "mos_model.safetensors", training={
                "mode": cfg.finetune.mode, "checkpoint": str(cfg.checkpoint), "csv": str(Path(cfg.data.csv).resolve()),
                "csv_sha256": sha256_file(cfg.data.csv), "n": len(data), "config": config_to_dict(cfg),
            })
            summary["model"] = str(path)
        write_summary(out / "summary.json", summary)
        save_config(cfg, out / "config.yaml")
        print(format_table(rows, summary))
        print(f"wrote {out / 'results.csv'} and {out / 'summary.json'}" + (f"; model {summary['model']}" if final else ""))
        return 0
    finally:
        cleanup_distributed()
