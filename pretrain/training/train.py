"""``attiqa-pretrain train``: train the attribute-aware network (docs/method.md, section 6, in the
source repository).

Teachers: ``synthetic`` (graded degradations of pristine photos, no downloads) and/or
``clip`` (pseudo-labels written by ``attiqa-pretrain label``). Single process, or DDP
under ``torchrun`` (gloo on CPU, NCCL on GPU). Runs on the shared training skeleton
(:mod:`attiqa_train.loop`): rank 0 writes TensorBoard logs, the resumable ``state.pt``
(atomic) and, at the end, ``checkpoint.safetensors`` that ``AttiqaLoss(checkpoint=...)``
loads. The step itself is :class:`pretrain.training.step.PretrainStep`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet, create_attiqa_net, load_checkpoint, save_checkpoint
from attiqa_loss.io import ImageListing, read_image
from attiqa_loss.network import AA_LAYERS
from attiqa_train.config import add_config_arguments, config_from_args, config_to_dict
from attiqa_train.logger import RunLogger
from attiqa_train.loop import TrainingRun, run_steps
from attiqa_train.rundir import MANIFEST_NAME
from attiqa_train.optim import adamw, fit_warmup, use_bf16, warmup_cosine_scheduler

from ..synthetic.graded import family_srcc
from ..synthetic.teacher import resolve_families
from .config import PretrainConfig
from .hardening import check_hardening
from .step import Logits, PretrainStep
from .teachers import ClipLabelled, build_synthetic

DESCRIPTION = __doc__

__all__ = ["DESCRIPTION", "RUN_FILES", "RESUME_FREE_KEYS", "check_config", "heldout_srcc", "train",
           "add_arguments", "run"]

#: What a run writes into its folder: any of them present means the folder holds a run.
RUN_FILES = ("config.yaml", "state.pt", "checkpoint.safetensors", "tb")
#: Config keys that may change on ``--resume``: they do not change the trained weights
#: (logging, validation and state intervals, threads, the validation section).
RESUME_FREE_KEYS = ("train.log_every", "train.val_every", "train.state_every", "train.checkpoint_every",
                    "train.threads", "val.")


def heldout_srcc(net: AttiqaNet, images: List[torch.Tensor], levels: int, device: torch.device,
                 families: Optional[Dict[str, List[str]]] = None) -> Dict[str, float]:
    """Validation during training: mean per-image SRCC of each attribute with its trained
    degradation families (``families``, default :func:`resolve_families`) on held-out
    ``images``; attributes without any family are left out."""
    families = families if families is not None else resolve_families()
    net.eval()

    def scorer(x):
        return net(x.to(device), check=False)

    out = {}
    with torch.no_grad():
        for attr in ATTRIBUTES:
            vals = [family_srcc(scorer, images, attr, name, levels)["srcc"][:, ATTRIBUTES.index(attr)]
                    for name in families[attr]]
            if vals:
                out[attr] = float(torch.cat(vals).nanmean())
    net.train()
    return out


def check_config(cfg: PretrainConfig) -> None:
    """The rules that involve several sections; raises ``ValueError`` naming the keys."""
    if not cfg.synthetic.enabled and not cfg.clip.enabled:
        raise ValueError("enable at least one teacher: synthetic.enabled or clip.enabled (--labels DIR)")
    if cfg.synthetic.enabled and not cfg.synthetic.images:
        raise ValueError("the synthetic teacher needs photos: pass --images DIR or set synthetic.images")
    if cfg.clip.enabled and not cfg.clip.labels:
        raise ValueError("the clip teacher needs labels: pass --labels DIR (output of `attiqa-pretrain label`)")
    if cfg.train.batch_size < 4:
        raise ValueError(f"train.batch_size must be >= 4, got {cfg.train.batch_size}")
    check_hardening(cfg.hardening, cfg.train.batch_size)
    if cfg.model.aa_layer is not None and cfg.model.aa_layer not in AA_LAYERS:
        raise ValueError(f"model.aa_layer must be null, 'avg' or 'blur', got {cfg.model.aa_layer!r}")


def _say(*lines: str) -> None:
    print("\n".join(lines), file=sys.stderr)


def _teachers(cfg: PretrainConfig, is_main: bool):
    """``(synthetic, n_sources, clip, n_clip, held-out files, skipped files)``; reports
    unusable or upscaled photos on rank 0."""
    synthetic, held, skipped, clip, n_clip = None, [], [], None, 0
    if cfg.synthetic.enabled:
        synthetic, train_files, held, not_listed, bad = build_synthetic(cfg.synthetic)
        skipped = not_listed + bad
        if is_main and not_listed:
            _say(f"synthetic teacher: {ImageListing(skipped=not_listed).summary()}")
        if is_main and bad:
            _say(f"synthetic teacher: {len(bad)} photo(s) cannot be used and are left out; training on "
                 f"{len(train_files)} photo(s), {len(held)} held out (all listed in the checkpoint's "
                 "training.skipped_files):", *ImageListing(skipped=bad).lines())
        if is_main and synthetic.upscaled:
            _say(f"synthetic teacher: {len(synthetic.upscaled)} photo(s) smaller than synthetic.crop="
                 f"{cfg.synthetic.crop} are used upscaled (photos at least the crop avoid it):",
                 *ImageListing(skipped=synthetic.upscaled).lines())
    if cfg.clip.enabled:
        # One batch holds both teachers' images, so with the synthetic teacher on, CLIP
        # crops take its size (DDP allows one forward per backward).
        crop = cfg.synthetic.crop if synthetic is not None else cfg.clip.crop
        clip = ClipLabelled(cfg.clip.labels, crop=crop, max_side=cfg.clip.max_side)
        n_clip = cfg.train.batch_size if synthetic is None else round(cfg.train.batch_size * cfg.clip.fraction)
    n_sources = 0 if synthetic is None else max(1, (cfg.train.batch_size - n_clip) // synthetic.group_size)
    return synthetic, n_sources, clip, n_clip, list(held), skipped


def _init_from(net: AttiqaNet, path: str) -> None:
    """Copy an exported quality model's weights into ``net`` (``model.init_checkpoint``;
    ``default``: the model embedded in the package); ``ValueError`` naming both when the
    architectures differ."""
    from attiqa_loss.loss import default_checkpoint_path

    source = load_checkpoint(default_checkpoint_path() if path == "default" else path)
    try:
        net.load_state_dict(source.state_dict())
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches, listed by torch
        first = str(exc).strip().splitlines()[-1].strip()
        raise ValueError(f"model.init_checkpoint {path} holds a {source.backbone_name!r} network that does not fit "
                         f"model.backbone / model.aa_layer / model.normalize_tone of this config ({first})") from None


def train(cfg: PretrainConfig, out: Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> Path:
    """Run the training described by ``cfg``; returns the exported checkpoint path.

    ``out`` is locked for the run (:mod:`attiqa_train.rundir`). A folder that already holds a
    run is refused unless ``resume`` (continue from ``out/state.pt``, which must exist,
    with a config that differs from ``out/config.yaml`` at most in
    :data:`RESUME_FREE_KEYS`) or ``overwrite`` (the previous run's files are removed).
    Process-wide settings (threads) are the caller's: the CLI sets them.
    """
    check_config(cfg)
    t, hard = cfg.train, cfg.hardening
    config = config_to_dict(cfg)
    with TrainingRun(out, command="attiqa-pretrain train", config=config, run_files=RUN_FILES,
                     free_keys=RESUME_FREE_KEYS, defaults=config_to_dict(PretrainConfig()), device=t.device,
                     resume=resume, overwrite=overwrite, config_class=PretrainConfig) as run:
        dist, device, out = run.dist, run.dist.device, run.out
        # The photos and labels first: a folder without usable photos is reported before
        # the network is built (or its pretrained weights fetched).
        synthetic, n_sources, clip, n_clip, held, skipped = _teachers(cfg, dist.is_main)
        warmup = fit_warmup(t.warmup_steps, t.steps, say=dist.is_main)
        with torch.random.fork_rng(devices=[]):  # the initial weights come from train.seed alone
            torch.manual_seed(t.seed)
            net = create_attiqa_net(
                cfg.model.backbone, pretrained=cfg.model.pretrained or bool(cfg.model.pretrained_file),
                pretrained_cfg_overlay={"file": cfg.model.pretrained_file} if cfg.model.pretrained_file else None,
                backbone_kwargs={"aa_layer": cfg.model.aa_layer} if cfg.model.aa_layer else None,
                normalize_tone=cfg.model.normalize_tone, centre_chroma=cfg.model.centre_chroma,
            )
            if cfg.model.init_checkpoint:
                _init_from(net, cfg.model.init_checkpoint)
            net = net.to(device)
        plain = model = Logits(net)
        if dist.distributed:
            model = nn.parallel.DistributedDataParallel(plain, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = adamw(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        scheduler = warmup_cosine_scheduler(optimizer, warmup=warmup, total=t.steps, say=dist.is_main)
        start = run.begin(model=net, optimizer=optimizer, scheduler=scheduler)
        step_fn = PretrainStep(model, plain, synthetic=synthetic, n_sources=n_sources, clip=clip, n_clip=n_clip,
                               loss=cfg.loss, hard=hard, seed=t.seed, rank=dist.rank, device=device,
                               bf16=use_bf16(t.amp, device))
        # val.max_images=0 turns validation off (no held-out images read, no val/srcc logged).
        held_images = ([read_image(f, max_side=cfg.val.max_side) for f in held[: cfg.val.max_images]]
                       if dist.is_main and held else []) or None
        log = RunLogger(out / "tb", purge_step=start + 1 if start else 0, enabled=dist.is_main)
        log.text("config", "```\n" + __import__("yaml").safe_dump(config) + "\n```", start)
        t0, last_val = time.perf_counter(), {}

        def on_log(done: int, means: Dict[str, float]) -> None:
            for k, v in means.items():
                log.scalar(f"loss/{k}", v, done)
            log.scalar("lr", scheduler.get_last_lr()[0], done)
            log.scalar("speed/images_per_s", step_fn.seen / (time.perf_counter() - t0), done)

        def on_validate(done: int) -> None:
            last_val.clear()
            last_val.update(heldout_srcc(net, held_images, cfg.val.levels, device, synthetic.families))
            for k, v in last_val.items():
                log.scalar(f"val/srcc/{k}", v, done)
            _say("val SRCC " + " ".join(f"{k}={v:.3f}" for k, v in last_val.items()))

        try:
            run_steps(step_fn, start=start, steps=t.steps, optimizer=optimizer, scheduler=scheduler,
                      clip_params=net.parameters(), grad_clip=t.grad_clip, log_every=t.log_every, on_log=on_log,
                      val_every=t.val_every if held_images is not None else 0, on_validate=on_validate,
                      save_every=t.state_every,
                      on_save=lambda done: run.save(done, model=net, optimizer=optimizer, scheduler=scheduler),
                      progress=progress and dist.is_main)
            final = out / "checkpoint.safetensors"
            if dist.is_main:
                training = {
                    "recipe": "attiqa-pretrain train",
                    "teachers": [n for n, on in (("synthetic", cfg.synthetic.enabled), ("clip", cfg.clip.enabled)) if on],
                    "config": config, "steps": t.steps, "world_size": dist.world_size,
                    "holdout_files": [str(f) for f in held],
                    "skipped_files": [{"path": str(p), "reason": r} for p, r in skipped],
                    "val_srcc": dict(last_val), "wall_time_s_this_run": round(time.perf_counter() - t0, 1),
                }
                save_checkpoint(net, final, training=training, dtype=torch.float16 if t.export_fp16 else None)
                if log.writer is not None:
                    log.writer.add_hparams(
                        {"backbone": cfg.model.backbone, "steps": t.steps, "batch_size": t.batch_size, "lr": t.lr},
                        {f"hparam/srcc_{k}": v for k, v in last_val.items()} or {"hparam/steps": float(t.steps)},
                        run_name="hparams")
                _say(f"wrote {final}")
        finally:
            log.close()
    return final


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", nargs="+", default=None, help="folders of pristine photos (synthetic teacher)")
    parser.add_argument("--labels", default=None, help="output folder of `attiqa-pretrain label` (enables the clip teacher)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUT from OUT/state.pt (refused without it, or with a config that "
                        "changes the result; reuses OUT/config.yaml when --config is not given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in OUT (its config, state, checkpoint and tb/ are deleted, only as "
                        "far as OUT/attiqa-run.json records that a run wrote them); without --resume or "
                        "--overwrite an OUT holding a run is refused")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    saved = out / "config.yaml"
    # --resume continues with the run's own config (--set may still change free keys); a
    # config.yaml beside neither a run record nor a state is the user's own file, not a
    # run's: it is not read, and the run folder's check says what the folder holds.
    if args.resume and args.config is None and saved.is_file() and (
            (out / MANIFEST_NAME).is_file() or (out / "state.pt").is_file()):
        args.config = saved
    values = {}
    if args.images:
        values["synthetic.images"] = list(args.images)
    if args.labels:
        values.update({"clip.labels": args.labels, "clip.enabled": True})
    cfg = config_from_args(PretrainConfig, args, values=values)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    try:
        final = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"attiqa-pretrain train: {exc}") from None
    problem = diverged(final) if int(os.environ.get("RANK", "0")) == 0 else None
    if problem is not None:  # a diverged run is no result: never exit 0 with NaN weights or metrics
        print(f"attiqa-pretrain train: {problem}; its files in {args.out} are kept for inspection "
              "(a lower train.lr or train.grad_clip may help)", file=sys.stderr)
        return 1
    return 0


def diverged(checkpoint: Path) -> Optional[str]:
    """Why the exported ``checkpoint`` is no result, or None: weights or scores that are
    not finite (the loader's probe, :func:`attiqa_loss.load_checkpoint`), or a final
    validation SRCC that is not finite."""
    from attiqa_loss.checkpoint import CheckpointError, read_checkpoint_metadata

    try:
        load_checkpoint(checkpoint)
    except CheckpointError as exc:
        return f"the trained network is not usable: {exc}"
    val = read_checkpoint_metadata(checkpoint).get("training", {}).get("val_srcc", {})
    bad = [f"{k}={v}" for k, v in sorted(val.items()) if not (isinstance(v, (int, float)) and math.isfinite(v))]
    return f"the final validation SRCCs are not finite ({', '.join(bad)})" if bad else None
