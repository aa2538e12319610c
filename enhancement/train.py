"""The training loop of ``attiqa-enhance train`` (single process or DDP under torchrun).

Runs on the shared training skeleton (:mod:`attiqa_train.loop`). Files written to the
output folder (rank 0 only):

- ``config.yaml``: the resolved config.
- ``state.pt``: the resumable state (model, optimiser, scheduler, EMA and step), every
  ``train.state_every`` steps and at the end (atomic); ``--resume`` continues from it
  exactly. (A run folder of an earlier version holds ``checkpoint.pt``: ``--resume``
  renames it.)
- ``enhancer.safetensors``: the final (EMA) generator weights with the U-Net config in
  the metadata; what ``attiqa-enhance infer`` reads.
- ``metrics.json``: the final validation metrics and attribute scores.
- ``tb/``: TensorBoard events (see :mod:`enhancement.tensorboard_utils`).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from attiqa_loss import AttiqaLoss
from attiqa_loss.io import ImageListing
from attiqa_train.config import config_to_dict
from attiqa_train.distributed import DistInfo, barrier
from attiqa_train.ema import ModelEma
from attiqa_train.files import write_json
from attiqa_train.loop import TrainingRun, run_steps
from attiqa_train.optim import adamw, autocast, fit_warmup, use_bf16, warmup_cosine_scheduler
from attiqa_train.sampling import StepBatchSampler
from attiqa_train.state import STATE_NAME

from .config import NO_REFERENCE_TERMS, EnhanceConfig
from .objectives import EnhancementObjective, resolve_lpips
from .run_data import build_data, build_unpaired
from .tensorboard_utils import ROLES, EnhanceLogger, attribute_tag, hparams_of
from .unet import UNet, create_unet
from .heldout import evaluate
from .weights import ENHANCER_FILENAME, load_enhancer, save_enhancer

__all__ = ["train", "RUN_FILES", "RESUME_FREE_KEYS", "LEGACY_STATE_NAME"]

#: The resumable state's name before attiqa 0.2 (``--resume`` renames it to ``state.pt``).
LEGACY_STATE_NAME = "checkpoint.pt"
#: What a run writes into its folder: any of them present means the folder holds a run.
RUN_FILES = ("config.yaml", STATE_NAME, LEGACY_STATE_NAME, ENHANCER_FILENAME, "metrics.json", "tb")
#: Config keys that may change on ``--resume``: they do not change the trained weights
#: (logging, validation and state intervals, the progress bar, DataLoader workers -
#: batches do not depend on them - and the validation section). A saved ``config.yaml``
#: is compared under the current key names (its ``val.every`` is ``train.val_every``).
RESUME_FREE_KEYS = ("train.log_every", "train.val_every", "train.state_every", "train.ckpt_every", "train.progress",
                    "data.num_workers", "val.")


#: added to ``train.seed`` for the sampler of ``data.unpaired_dir`` (independent of the pairs' batches)
UNPAIRED_SEED_OFFSET = 7919


def _init_from(model: UNet, source: str) -> None:
    """Copy trained enhancer weights into ``model`` (``model.init_checkpoint``; ``default``
    = the shipped enhancer); the stored U-Net shape must be the config's."""
    trained = load_enhancer(None if source == "default" else source)
    if trained.config() != model.config():
        differ = {k: (v, trained.config().get(k)) for k, v in model.config().items() if trained.config().get(k) != v}
        raise ValueError(f"model.init_checkpoint {source} holds a U-Net that differs from the config's: "
                         + ", ".join(f"model.{k} is {a!r} in the config, {b!r} in the file" for k, (a, b) in differ.items()))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(trained.state_dict()[name])


def _loss_weights(cfg: EnhanceConfig, lpips_available: bool) -> Dict[str, float]:
    loss = cfg.loss
    return {
        "fidelity": loss.fidelity_weight,
        "ssim": loss.ssim_weight,
        "lpips": loss.lpips_weight if lpips_available else 0.0,
        "attiqa": loss.attiqa_weight,
        "exposure": loss.exposure_weight,
        "tv": loss.tv_weight,
        "spatial": loss.spatial_weight,
        "color": loss.color_weight,
        "smooth": loss.smooth_weight,
    }


def _sample_tags(val: List[Dict[str, Any]]) -> List[str]:
    """``samples/<file stem>`` of each validation image (``_<i>`` added when stems repeat)."""
    stems = [Path(str(item.get("name", i))).stem or str(i) for i, item in enumerate(val)]
    return [f"samples/{s}" if stems.count(s) == 1 else f"samples/{s}_{i}" for i, s in enumerate(stems)]


class _Trainer:
    """State of one training run; built from the config in :func:`train`."""

    def __init__(self, cfg: EnhanceConfig, out_dir: Path, info: DistInfo, *, init_weights: bool = True) -> None:
        self.cfg, self.out_dir, self.info = cfg, out_dir, info
        self.device = info.device
        t = cfg.train
        # The data first: a bad folder, too few images for validation or unusable files are
        # reported before any model (U-Net, quality model, LPIPS) is built or loaded.
        self.dataset, self.val, self.skipped = build_data(cfg)
        # Real photos without references (data.unpaired_dir): the no-reference terms only.
        self.unpaired = build_unpaired(cfg, self.skipped)
        warmup = fit_warmup(t.warmup_steps, t.steps, say=info.is_main)  # a short trial of a long recipe: said now
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every rank, from train.seed
            torch.manual_seed(t.seed)
            self.model: UNet = create_unet(**cfg.model.unet_kwargs()).to(self.device)
        if cfg.model.init_checkpoint and init_weights:  # on --resume the state has the weights
            _init_from(self.model, cfg.model.init_checkpoint)
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
            say=info.is_main,
        )
        self.lpips = lpips_model.to(self.device) if lpips_model is not None else None
        weights = _loss_weights(cfg, self.lpips is not None)
        settings = dict(fidelity=cfg.loss.fidelity, charbonnier_eps=cfg.loss.charbonnier_eps,
                        ssim_window=cfg.loss.ssim_window, exposure_level=cfg.loss.exposure_level,
                        exposure_patch=cfg.loss.exposure_patch,
                        attiqa=self.quality if weights["attiqa"] > 0 else None)
        self.objective = EnhancementObjective(weights, lpips_model=self.lpips if weights["lpips"] > 0 else None,
                                              **settings)
        self.unpaired_objective = None
        if self.unpaired is not None:
            self.unpaired_objective = EnhancementObjective(
                {k: v for k, v in weights.items() if k in NO_REFERENCE_TERMS}, **settings)
        self.optimizer = adamw(self.model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        self.scheduler = warmup_cosine_scheduler(self.optimizer, warmup=warmup, total=t.steps,
                                                 min_ratio=t.min_lr / t.lr, say=info.is_main)
        self.ema = ModelEma(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.step = 0
        self.last_metrics: Dict[str, float] = {}
        self.val_cache: Dict[int, Dict[str, float]] = {}  # the input's and reference's figures, computed once
        self.validated_at = -1  # on every rank, so all ranks agree on the barriers to enter

    def state_objects(self) -> Dict[str, object]:
        """What ``state.pt`` holds (besides the step)."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "ema": self.ema}

    def eval_model(self) -> UNet:
        """The weights to validate and export: the EMA average when enabled."""
        if self.ema is None:
            return self.model
        model = copy.deepcopy(self.model)
        self.ema.copy_to(model)
        return model

    def validate(self, log: EnhanceLogger) -> None:
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
                cache=self.val_cache,
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

    def export(self, log: EnhanceLogger) -> None:
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
        write_json(self.out_dir / "metrics.json", {"step": self.step, **self.last_metrics})
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

    def run(self, run: TrainingRun) -> Dict[str, float]:
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
        # On resume, events at the saved state's own step were logged before it was saved:
        # TensorBoard drops (in every run) only what came after it.
        log = EnhanceLogger(self.out_dir / "tb", purge_step=self.step + 1 if self.step else 0, enabled=info.is_main,
                            roles=roles)
        config_yaml = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
        log.text("config", "\n".join("    " + line for line in config_yaml.splitlines()), self.step)
        bf16 = use_bf16(t.amp, self.device)
        batches = iter(loader)
        unpaired_batches = None
        if self.unpaired is not None:
            # Its own sampler and seed: the pairs' batches are the same with or without it.
            unpaired_sampler = StepBatchSampler(len(self.unpaired), cfg.data.unpaired_batch,
                                                seed=t.seed + UNPAIRED_SEED_OFFSET, rank=info.rank,
                                                start_step=self.step, steps=t.steps)
            unpaired_batches = iter(torch.utils.data.DataLoader(
                self.unpaired, batch_sampler=unpaired_sampler, num_workers=cfg.data.num_workers,
                pin_memory=self.device.type == "cuda"))

        def step_fn(step: int):
            batch = next(batches)
            x = batch["input"].to(self.device, non_blocking=True)
            y = batch["target"].to(self.device, non_blocking=True) if "target" in batch else None
            n = x.shape[0]
            if unpaired_batches is not None:  # one forward pass for both (the U-Net has no batch statistics)
                x = torch.cat([x, next(unpaired_batches)["input"].to(self.device, non_blocking=True)])
            with autocast(bf16, self.device):
                maps = None
                if self.objective.needs_maps:
                    out, maps = ddp(x, check=False, return_maps=True)
                else:
                    out = ddp(x, check=False)
                total, terms = self.objective(out[:n], y, inputs=x[:n], maps=None if maps is None else maps[:n])
                if self.unpaired_objective is not None:
                    total_u, terms_u = self.unpaired_objective(out[n:], inputs=x[n:],
                                                               maps=None if maps is None else maps[n:])
                    total = total + total_u
                    terms.update({f"unpaired_{k}": v for k, v in terms_u.items()})
                return total, terms

        def after_step(done: int) -> None:
            if self.ema is not None:
                self.ema.update(self.model)
            self.step = done

        def on_log(done: int, means: Dict[str, float]) -> None:
            for k, v in means.items():
                log.scalar(f"loss/{k}", v, done)
            log.scalar("train/lr", self.scheduler.get_last_lr()[0], done)

        self.model.train()
        try:
            if cfg.val.at_start and self.step == 0:
                self.validate(log)
            run_steps(step_fn, start=self.step, steps=t.steps, optimizer=self.optimizer, scheduler=self.scheduler,
                      clip_params=self.model.parameters(), grad_clip=t.grad_clip, after_step=after_step,
                      log_every=t.log_every, on_log=on_log, val_every=t.val_every,
                      on_validate=lambda done: self.validate(log), save_every=t.state_every,
                      on_save=lambda done: run.save(done, **self.state_objects()),
                      progress=info.is_main and t.progress)
            if self.validated_at != self.step:  # resumed at the end: still report the final weights
                self.validate(log)
            self.export(log)
        finally:
            log.close()
        return self.last_metrics


def train(cfg: EnhanceConfig, out_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Dict[str, float]:
    """Train an enhancer as ``cfg`` says; write results to ``out_dir`` (see the module docstring).

    Works in one process or under ``torchrun`` (one process per device; gloo on CPU).
    ``out_dir`` is locked for the run (:mod:`attiqa_train.rundir`). A folder that already
    holds a run is refused unless ``resume`` (continue from ``state.pt``, which must
    exist, with a config that differs from the run's ``config.yaml`` at most in
    :data:`RESUME_FREE_KEYS`) or ``overwrite`` (the previous run's files are removed).

    Returns:
        The final validation metrics and mean attribute scores (rank 0; empty elsewhere).
    """
    with TrainingRun(out_dir, command="attiqa-enhance train", config=config_to_dict(cfg), run_files=RUN_FILES,
                     free_keys=RESUME_FREE_KEYS, defaults=config_to_dict(EnhanceConfig()), device=cfg.train.device,
                     resume=resume, overwrite=overwrite, legacy_state_names=(LEGACY_STATE_NAME,),
                     config_class=EnhanceConfig) as run:
        info = run.dist
        trainer = _Trainer(cfg, run.out, info, init_weights=not run.resume)
        trainer.step = run.begin(**trainer.state_objects())
        if trainer.step > cfg.train.steps:
            raise ValueError(f"--resume: the saved state is at step {trainer.step}, beyond "
                             f"train.steps={cfg.train.steps}")
        if info.is_main:
            where = f"{info.world_size} processes" if info.distributed else "1 process"
            print(
                f"attiqa-enhance: training {cfg.data.mode}/{cfg.data.task} on {trainer.device} ({where}), "
                f"{len(trainer.dataset)} training and {len(trainer.val)} validation images"
                + (f" (+ {len(trainer.unpaired)} unpaired, {cfg.data.unpaired_batch} per step)" if trainer.unpaired is not None else "")
                + ", "
                f"steps {trainer.step}->{cfg.train.steps}; loss terms {trainer.objective.weights}",
                file=sys.stderr,
            )
            if trainer.skipped:
                listing = ImageListing(skipped=trainer.skipped)
                print(f"attiqa-enhance: {listing.summary()}; training on the rest (all listed in "
                      "enhancer.safetensors, training.skipped_files)", file=sys.stderr)
                if listing.lines():
                    print("\n".join(listing.lines()), file=sys.stderr)
        return trainer.run(run)
