"""The training loop of ``attiqa-enhance train`` (single process or DDP under torchrun).

Files written to the output folder (rank 0 only):

- ``config.yaml``: the resolved config.
- ``checkpoint.pt``: model, optimiser, scheduler, EMA and step, every ``train.ckpt_every``
  steps and at the end (atomic); ``--resume`` continues from it exactly.
- ``enhancer.safetensors``: the final (EMA) generator weights with the U-Net config in
  the metadata; what ``attiqa-enhance infer`` reads.
- ``metrics.json``: the final validation metrics and attribute scores.
- ``tb/``: TensorBoard events (see :mod:`enhancement.tensorboard_utils`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from attiqa_loss import AttiqaLoss
from attiqa_loss.io import ImageListing, atomic_write
from pretrain.config import config_to_dict, save_config
from pretrain.distributed import DistInfo, all_reduce_mean, barrier, cleanup_distributed, init_distributed
from pretrain.rundir import prepare_run_dir
from pretrain.state import load_state, save_state

from .config import MIN_CROP, EnhanceConfig
from .data import EnhanceDataset, StepBatchSampler, check_items, list_items, load_validation, split_holdout
from .ema import ModelEma
from .objectives import EnhancementObjective, resolve_lpips
from .synthesis import synthesize_low_light, synthesize_noise
from .tensorboard_utils import ROLES, RunLogger, attribute_tag, hparams_of
from .unet import UNet, create_unet
from .validate import evaluate
from .weights import ENHANCER_FILENAME, save_enhancer

__all__ = ["train", "warmup_cosine", "CHECKPOINT_NAME", "RUN_FILES", "RESUME_FREE_KEYS"]

CHECKPOINT_NAME = "checkpoint.pt"
#: What a run writes into its folder: any of them present means the folder holds a run.
RUN_FILES = ("config.yaml", CHECKPOINT_NAME, ENHANCER_FILENAME, "metrics.json", "tb")
#: Config keys that may change on ``--resume``: they do not change the trained weights
#: (logging and checkpoint intervals, the progress bar, DataLoader workers - batches do
#: not depend on them - and the validation section).
RESUME_FREE_KEYS = ("train.log_every", "train.ckpt_every", "train.progress", "data.num_workers", "val.")


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _degrade_fn(cfg: EnhanceConfig):
    if cfg.data.mode != "synthetic":
        return None
    if cfg.data.task == "lowlight":
        return functools.partial(synthesize_low_light, **dataclasses.asdict(cfg.data.lowlight))
    return functools.partial(synthesize_noise, **dataclasses.asdict(cfg.data.noise))


def _build_data(cfg: EnhanceConfig) -> Tuple[EnhanceDataset, List[Dict[str, Any]], List[Tuple[Path, str]]]:
    """The training set, the decoded validation set, and ``(path, reason)`` of every file
    left out: by the listing (not an image, dangling symlink, ...) or by the check of
    every item up front (does not decode, pair sizes differ, smaller than the crop).

    The check comes before the hold-out split, so a bad file is left out of both sides;
    when all are good the split is what it always was."""
    d = cfg.data
    if not d.train_dir:
        raise ValueError("no training images: pass --data DIR or set data.train_dir")
    skipped: List[Tuple[Path, str]] = []
    listed = list_items(d.train_dir, d.mode, skipped)
    items, bad = check_items(listed, d.mode, min_side=d.crop_size, max_side=d.max_side)
    skipped += bad
    if not items:
        raise ValueError(f"no usable training images in {d.train_dir}: all {len(listed)} were left out: "
                         + ImageListing(skipped=bad).summary())
    if d.val_dir:
        val_items, bad = check_items(list_items(d.val_dir, d.mode, skipped), d.mode, min_side=MIN_CROP,
                                     max_side=d.max_side, what="the quality model's minimum")
        skipped += bad
    else:
        items, val_items = split_holdout(items, d.val_images, cfg.train.seed)
    degrade = _degrade_fn(cfg)
    dataset = EnhanceDataset(
        items, d.mode, d.crop_size, degrade=degrade, max_side=d.max_side, flips=d.flips, rot90=d.rot90
    )
    val = load_validation(
        val_items, d.mode, crop_size=cfg.val.crop_size, degrade=degrade, max_side=d.max_side, seed=cfg.train.seed
    )
    return dataset, val, skipped


def _amp_context(amp: str, device: torch.device):
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _loss_weights(cfg: EnhanceConfig, lpips_available: bool) -> Dict[str, float]:
    loss = cfg.loss
    return {
        "fidelity": loss.fidelity_weight,
        "ssim": loss.ssim_weight,
        "lpips": loss.lpips_weight if lpips_available else 0.0,
        "attiqa": loss.attiqa_weight,
        "exposure": loss.exposure_weight,
        "tv": loss.tv_weight,
    }


def _sample_tags(val: List[Dict[str, Any]]) -> List[str]:
    """``samples/<file stem>`` of each validation image (``_<i>`` added when stems repeat)."""
    stems = [Path(str(item.get("name", i))).stem or str(i) for i, item in enumerate(val)]
    return [f"samples/{s}" if stems.count(s) == 1 else f"samples/{s}_{i}" for i, s in enumerate(stems)]


class _Trainer:
    """State of one training run; built from the config in :func:`train`."""

    def __init__(self, cfg: EnhanceConfig, out_dir: Path, info: DistInfo) -> None:
        self.cfg, self.out_dir, self.info = cfg, out_dir, info
        self.device = info.device
        t = cfg.train
        torch.manual_seed(t.seed)  # same initial weights on every rank (DDP broadcasts them too)
        self.model: UNet = create_unet(**dataclasses.asdict(cfg.model)).to(self.device)
        self.quality = AttiqaLoss(
            weights=cfg.loss.attiqa_weights,
            targets=cfg.loss.attiqa_targets,
            checkpoint=cfg.loss.attiqa_checkpoint or None,
            views=cfg.loss.attiqa_views,
        ).to(self.device)
        lpips_model = resolve_lpips(
            cfg.loss.lpips_net,
            weight=cfg.loss.lpips_weight,
            allow_missing=cfg.loss.lpips_allow_missing,
            for_metrics=cfg.val.lpips,
        )
        self.lpips = lpips_model.to(self.device) if lpips_model is not None else None
        weights = _loss_weights(cfg, self.lpips is not None)
        self.objective = EnhancementObjective(
            weights,
            fidelity=cfg.loss.fidelity,
            charbonnier_eps=cfg.loss.charbonnier_eps,
            ssim_window=cfg.loss.ssim_window,
            exposure_level=cfg.loss.exposure_level,
            exposure_patch=cfg.loss.exposure_patch,
            lpips_model=self.lpips if weights["lpips"] > 0 else None,
            attiqa=self.quality if weights["attiqa"] > 0 else None,
        )
        self.dataset, self.val, self.skipped = _build_data(cfg)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        schedule = functools.partial(warmup_cosine, warmup=t.warmup_steps, total=t.steps, min_ratio=t.min_lr / t.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.ema = ModelEma(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.step = 0
        self.last_metrics: Dict[str, float] = {}
        self.validated_at = -1  # on every rank, so all ranks agree on the barriers to enter

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def resume(self) -> None:
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.checkpoint_path}")
        self.step = load_state(
            self.checkpoint_path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema
        )
        if self.step > self.cfg.train.steps:
            raise ValueError(
                f"--resume: the checkpoint is at step {self.step}, beyond train.steps={self.cfg.train.steps}"
            )

    def save_checkpoint(self) -> None:
        if self.info.is_main:
            save_state(
                self.checkpoint_path,
                step=self.step,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                ema=self.ema,
                config=config_to_dict(self.cfg),
            )
        barrier()

    def eval_model(self) -> UNet:
        """The weights to validate and export: the EMA average when enabled."""
        if self.ema is None:
            return self.model
        model = copy.deepcopy(self.model)
        self.ema.copy_to(model)
        return model

    def validate(self, log: RunLogger) -> None:
        self.validated_at = self.step
        if self.info.is_main and self.val:
            model = self.eval_model()
            metrics, scores, kept = evaluate(
                model,
                self.val,
                quality=self.quality,
                device=self.device,
                lpips_model=self.lpips if self.cfg.val.lpips else None,
                keep=self.cfg.val.grid_images,
            )
            log.validation_metrics(metrics, self.step)
            log.attribute_scores(scores, self.step)
            for tag, images in zip(_sample_tags(self.val), kept):
                log.image_strip(tag, images, self.step, labels=ROLES[: len(images)])
            log.flush()
            self.last_metrics = {
                **{f"val/{k}": v for k, v in metrics.items()},
                **{f"attributes/{n}/{r}": v for r, per in scores.items() for n, v in per.items()},
            }
            self.model.train()
        barrier()

    def export(self, log: RunLogger) -> None:
        if not self.info.is_main:
            return
        training = {
            "config": config_to_dict(self.cfg),
            "steps": self.step,
            "metrics": self.last_metrics,
            "attiqa_checkpoint": self.cfg.loss.attiqa_checkpoint,
            "skipped_files": [{"path": str(p), "reason": r} for p, r in self.skipped],
        }
        save_enhancer(self.eval_model(), self.out_dir / ENHANCER_FILENAME, training=training)
        with atomic_write(self.out_dir / "metrics.json", "w") as f:
            json.dump({"step": self.step, **self.last_metrics}, f, indent=2)
        q = self.quality
        hparams = hparams_of(
            self.cfg,
            weights=dict(zip(q.attributes, q.weights.tolist())),
            targets=dict(zip(q.attributes, q.targets.tolist())),
        )
        # Output-side metrics only (the input/reference values are constants of the data),
        # pointing at tags of the `output` run, where the session is written. TensorBoard
        # shows the first five: PSNR, SSIM (LPIPS), then the attributes AttiqaLoss
        # weighs most.
        final = {label: f"val/{m}" for m, label in (("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"))
                 if f"val/{m}" in self.last_metrics}
        by_weight = sorted(zip(q.attributes, q.weights.tolist()), key=lambda item: -item[1])
        final.update({name: attribute_tag(name) for name, _ in by_weight
                      if f"attributes/{name}/output" in self.last_metrics})
        log.hparams(hparams, final, self.step, run="output")

    def run(self) -> Dict[str, float]:
        cfg, t, info = self.cfg, self.cfg.train, self.info
        ddp = DistributedDataParallel(self.model) if info.distributed else self.model
        sampler = StepBatchSampler(
            len(self.dataset), t.batch_size, seed=t.seed, rank=info.rank, start_step=self.step, steps=t.steps
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        # Role sub-runs: none without validation images, no reference without targets.
        roles = ROLES[: 3 if "target" in self.val[0] else 2] if self.val else ()
        # On resume, events at the checkpoint's own step were logged before it was saved:
        # TensorBoard drops (in every run) only what came after it.
        log = RunLogger(self.out_dir / "tb", purge_step=self.step + 1 if self.step else 0, enabled=info.is_main,
                        roles=roles)
        from tqdm.auto import tqdm

        config_yaml = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
        log.text("config", "\n".join("    " + line for line in config_yaml.splitlines()), self.step)
        running: Dict[str, float] = {}
        window: Dict[str, torch.Tensor] = {}
        window_steps = 0
        bar = tqdm(
            total=t.steps, initial=self.step, disable=not (info.is_main and t.progress), file=sys.stderr, unit="step"
        )
        self.model.train()
        try:
            if cfg.val.at_start and self.step == 0:
                self.validate(log)
            for batch in loader:
                x = batch["input"].to(self.device, non_blocking=True)
                y = batch["target"].to(self.device, non_blocking=True) if "target" in batch else None
                with _amp_context(t.amp, self.device):
                    out = ddp(x, check=False)
                    total, terms = self.objective(out, y)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1
                for k, v in {**terms, "total": total}.items():
                    v = v.detach()
                    window[k] = window.get(k, 0) + v
                    running[k] = 0.9 * running.get(k, float(v)) + 0.1 * float(v)
                window_steps += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    for k, v in window.items():
                        log.scalar(f"loss/{k}", float(all_reduce_mean(v / window_steps)), self.step)
                    log.scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                    window, window_steps = {}, 0
                if self.step % cfg.val.every == 0 or self.step == t.steps:
                    self.validate(log)
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save_checkpoint()
            if self.validated_at != self.step:  # resumed at the end: still report the final weights
                self.validate(log)
            self.export(log)
        finally:
            bar.close()
            log.close()
        return self.last_metrics


def train(cfg: EnhanceConfig, out_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Dict[str, float]:
    """Train an enhancer as ``cfg`` says; write results to ``out_dir`` (see the module docstring).

    Works in one process or under ``torchrun`` (one process per device; gloo on CPU).
    ``out_dir`` is locked for the run (:mod:`pretrain.rundir`). A folder that already
    holds a run is refused unless ``resume`` (continue from ``checkpoint.pt``, which must
    exist, with a config that differs from the run's ``config.yaml`` at most in
    :data:`RESUME_FREE_KEYS`) or ``overwrite`` (the previous run's files are removed).

    Returns:
        The final validation metrics and mean attribute scores (rank 0; empty elsewhere).
    """
    out_dir = Path(out_dir)
    info = init_distributed(cfg.train.device)
    lock = None
    try:
        lock = prepare_run_dir(out_dir, command="attiqa-enhance train", run_files=RUN_FILES,
                               state_name=CHECKPOINT_NAME, state_what="checkpoint", resume=resume,
                               overwrite=overwrite, config=config_to_dict(cfg), free_keys=RESUME_FREE_KEYS,
                               is_main=info.is_main, device=info.device)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        trainer = _Trainer(cfg, out_dir, info)
        if resume:
            trainer.resume()
        if info.is_main:
            save_config(cfg, out_dir / "config.yaml")
            where = f"{info.world_size} processes" if info.distributed else "1 process"
            print(
                f"attiqa-enhance: training {cfg.data.mode}/{cfg.data.task} on {trainer.device} ({where}), "
                f"{len(trainer.dataset)} training and {len(trainer.val)} validation images, "
                f"steps {trainer.step}->{cfg.train.steps}; loss terms {trainer.objective.weights}",
                file=sys.stderr,
            )
            if trainer.skipped:
                listing = ImageListing(skipped=trainer.skipped)
                print(f"attiqa-enhance: {listing.summary()}; training on the rest (all listed in "
                      "enhancer.safetensors, training.skipped_files)", file=sys.stderr)
                if listing.lines():
                    print("\n".join(listing.lines()), file=sys.stderr)
        return trainer.run()
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed()
