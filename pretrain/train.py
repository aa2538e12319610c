"""``attiqa-pretrain train``: train the attribute-aware network (docs/method.md, section 6).

Teachers: ``synthetic`` (graded degradations of pristine photos, no downloads) and/or
``clip`` (pseudo-labels written by ``attiqa-pretrain label``). Single process, or DDP
under ``torchrun`` (gloo on CPU, NCCL on GPU). Rank 0 writes TensorBoard logs, the
resumable ``state.pt`` (atomic) and, at the end, ``checkpoint.safetensors`` that
``AttiqaLoss(checkpoint=...)`` loads.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet, create_attiqa_net, save_checkpoint
from attiqa_loss.network import AA_LAYERS
from attiqa_loss.io import ImageListing, scan_images
from attiqa_loss.checks import MIN_SIZE

from .config import add_config_arguments, check_minimums, config_from_args, config_to_dict, save_config
from .distributed import all_reduce_mean, barrier, cleanup_distributed, init_distributed
from .hardening import (HardeningConfig, adversarial_twins, check_hardening, edge_invariance_loss, edge_ranking_loss,
                        frozen_batchnorm, no_gain_loss, sample_anchors, sample_edge_pairs)
from .objectives import calibration_loss, consistency_loss, pretrain_losses, specificity_loss
from .rundir import prepare_run_dir
from .state import load_state, save_state, step_generator
from .synthetic import SyntheticTeacher, check_photos, resolve_families, split_holdout
from .validity import family_srcc

DESCRIPTION = __doc__


@dataclass
class ModelConfig:
    backbone: str = "resnet10t"
    #: load ImageNet weights through timm (needs network, or ``pretrained_file``)
    pretrained: bool = False
    #: local weight file for the backbone (timm ``pretrained_cfg_overlay={"file": ...}``)
    pretrained_file: Optional[str] = None
    #: anti-aliased downsampling in the backbone (timm ``aa_layer``): null, "avg" or "blur"
    aa_layer: Optional[str] = None


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
    #: family of pretrain/degradations.py); attributes left out keep the defaults
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
class LossConfig:
    ranking: float = 1.0
    calibration: float = 0.2
    consistency: float = 0.5
    specificity: float = 1.0
    margin: float = 0.5
    delta: float = 0.05


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    log_every: int = 20
    val_every: int = 500
    checkpoint_every: int = 250
    #: store the exported checkpoint in float16 (half the size)
    export_fp16: bool = False

    def __post_init__(self) -> None:
        check_minimums("train", self, steps=1, batch_size=4, warmup_steps=0, threads=0,
                       log_every=1, val_every=1, checkpoint_every=1)


@dataclass
class ValConfig:
    levels: int = 6
    max_images: int = 12
    max_side: int = 384

    def __post_init__(self) -> None:
        check_minimums("val", self, max_images=0, max_side=MIN_SIZE)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    clip: ClipTeacherConfig = field(default_factory=ClipTeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    hardening: HardeningConfig = field(default_factory=HardeningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)


class _Logits(nn.Module):
    """Forward to logits, so DDP's hooks see the call that produces the loss."""

    def __init__(self, net: AttiqaNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x))


class ClipLabelled:
    """Photos with CLIP pseudo-labels, drawn as random crops (group ``-1``: one ranking pool)."""

    def __init__(self, label_dir: str, *, crop: int, max_side: int) -> None:
        from .label import read_labels  # written by the labelling step

        self.paths, self.labels = read_labels(label_dir)
        if not self.paths:
            raise ValueError(f"no labelled images in {label_dir}")
        self.crop, self.max_side = crop, max_side

    def sample(self, n: int, g: torch.Generator):
        from attiqa_loss.io import read_image

        idx = torch.randint(len(self.paths), (n,), generator=g).tolist()
        images = []
        for i in idx:
            img = read_image(self.paths[i], max_side=self.max_side)
            h, w = img.shape[-2:]
            c = min(self.crop, h, w)
            top, left = int(torch.randint(h - c + 1, (), generator=g)), int(torch.randint(w - c + 1, (), generator=g))
            patch = img[:, top : top + c, left : left + c]
            if c != self.crop:
                patch = torch.nn.functional.interpolate(patch[None], size=(self.crop, self.crop), mode="bilinear")[0]
            images.append(patch)
        return torch.stack(images), self.labels[idx].clone()


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _build_synthetic(cfg: PretrainConfig):
    """The synthetic teacher, its training and held-out files, the listing's skipped
    entries (not an image, dangling symlink, ...) and ``(path, reason)`` of each photo
    that cannot be used (does not decode, or smaller than ``synthetic.crop // 2``).

    Every photo is checked up front, before the hold-out split, so a bad one is left out
    of both sides; when all are good the split and the photos are what they always were.
    """
    listing = scan_images(cfg.synthetic.images)
    good, photos, bad = check_photos(listing.files, max_side=cfg.synthetic.max_side,
                                     min_side=cfg.synthetic.crop // 2)
    if not good:
        raise ValueError(f"no usable photos for the synthetic teacher in {cfg.synthetic.images}: "
                         + (ImageListing(skipped=bad).summary() if bad else "no image files found"))
    train_files, held_files = split_holdout(good, cfg.synthetic.holdout_every)
    if not train_files:
        raise ValueError(f"synthetic.holdout_every={cfg.synthetic.holdout_every} holds out every usable photo "
                         f"({len(good)}); add photos or raise it")
    teacher = SyntheticTeacher(
        [photos[f] for f in train_files],
        crop=cfg.synthetic.crop,
        levels=cfg.synthetic.levels,
        min_gap=cfg.synthetic.min_gap,
        nuisance_prob=cfg.synthetic.nuisance_prob,
        scale_range=cfg.synthetic.scale_range,
        families=resolve_families(cfg.synthetic.families),
        nuisance_weights=cfg.synthetic.nuisance_weights,
    )
    # Photos between crop // 2 and crop are used, their crops upscaled (as always: leaving
    # them out would change the photos and draws of existing recipes); each is named.
    teacher.upscaled = [(f, f"{photos[f].shape[-1]}x{photos[f].shape[-2]} (after downscaling to max_side "
                            f"{cfg.synthetic.max_side}) is smaller than synthetic.crop={cfg.synthetic.crop}: "
                            "its crops are upscaled")
                        for f in good if min(photos[f].shape[-2:]) < cfg.synthetic.crop]
    return teacher, train_files, held_files, list(listing.skipped), bad


def validate(
    net: AttiqaNet,
    images: List[torch.Tensor],
    levels: int,
    device: torch.device,
    families: Optional[Dict[str, List[str]]] = None,
) -> Dict[str, float]:
    """Mean per-image SRCC of each attribute with its trained degradation families
    (``families``, default :func:`resolve_families`); attributes without any are left out."""
    families = families if families is not None else resolve_families()
    net.eval()

    def scorer(x):
        return net(x.to(device), check=False)

    out = {}
    for attr in ATTRIBUTES:
        vals = [family_srcc(scorer, images, attr, name, levels)["srcc"][:, ATTRIBUTES.index(attr)]
                for name in families[attr]]
        if vals:
            out[attr] = float(torch.cat(vals).nanmean())
    net.train()
    return out


#: What a run writes into its folder: any of them present means the folder holds a run.
RUN_FILES = ("config.yaml", "state.pt", "checkpoint.safetensors", "tb")
#: Config keys that may change on ``--resume``: they do not change the trained weights
#: (logging, validation and checkpoint intervals, threads, the validation section).
RESUME_FREE_KEYS = ("train.log_every", "train.val_every", "train.checkpoint_every", "train.threads", "val.")


def train(cfg: PretrainConfig, out: Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> Path:
    """Run the training described by ``cfg``; returns the exported checkpoint path.

    ``out`` is locked for the run (:mod:`pretrain.rundir`). A folder that already holds a
    run is refused unless ``resume`` (continue from ``out/state.pt``, which must exist,
    with a config that differs from ``out/config.yaml`` at most in
    :data:`RESUME_FREE_KEYS`) or ``overwrite`` (the previous run's files are removed).
    """
    if not cfg.synthetic.enabled and not cfg.clip.enabled:
        raise ValueError("enable at least one teacher: synthetic.enabled or clip.enabled (--labels DIR)")
    if cfg.synthetic.enabled and not cfg.synthetic.images:
        raise ValueError("the synthetic teacher needs photos: pass --images DIR or set synthetic.images")
    if cfg.clip.enabled and not cfg.clip.labels:
        raise ValueError("the clip teacher needs labels: pass --labels DIR (output of `attiqa-pretrain label`)")
    if cfg.train.batch_size < 4:
        raise ValueError(f"train.batch_size must be >= 4, got {cfg.train.batch_size}")
    hard = cfg.hardening
    check_hardening(hard, cfg.train.batch_size)
    if cfg.model.aa_layer is not None and cfg.model.aa_layer not in AA_LAYERS:
        raise ValueError(f"model.aa_layer must be null, 'avg' or 'blur', got {cfg.model.aa_layer!r}")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dist = init_distributed(cfg.train.device)
    out = Path(out)
    lock = prepare_run_dir(out, command="attiqa-pretrain train", run_files=RUN_FILES, state_name="state.pt",
                           resume=resume, overwrite=overwrite, config=config_to_dict(cfg),
                           free_keys=RESUME_FREE_KEYS, is_main=dist.is_main, device=dist.device,
                           defaults=config_to_dict(PretrainConfig()))  # keys added since count as defaults
    try:
        return _train(cfg, out, dist, resume=resume, progress=progress)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: PretrainConfig, out: Path, dist, *, resume: bool, progress: bool) -> Path:
    from tqdm.auto import tqdm

    hard = cfg.hardening
    device = dist.device
    torch.manual_seed(cfg.train.seed)
    overlay = {"file": cfg.model.pretrained_file} if cfg.model.pretrained_file else None
    net = create_attiqa_net(
        cfg.model.backbone, pretrained=cfg.model.pretrained or overlay is not None, pretrained_cfg_overlay=overlay,
        backbone_kwargs={"aa_layer": cfg.model.aa_layer} if cfg.model.aa_layer else None,
    ).to(device)
    plain = model = _Logits(net)
    if dist.distributed:
        model = nn.parallel.DistributedDataParallel(plain, device_ids=[device.index] if device.type == "cuda" else None)

    synthetic = held = None
    skipped: List = []
    n_clip = 0
    if cfg.synthetic.enabled:
        synthetic, train_files, held_files, not_listed, bad = _build_synthetic(cfg)
        held = list(held_files)
        skipped = not_listed + bad
        if dist.is_main and not_listed:
            print(f"synthetic teacher: {ImageListing(skipped=not_listed).summary()}", file=sys.stderr)
        if dist.is_main and bad:
            print(f"synthetic teacher: {len(bad)} photo(s) cannot be used and are left out; training on "
                  f"{len(train_files)} photo(s), {len(held)} held out (all listed in the checkpoint's "
                  "training.skipped_files):", file=sys.stderr)
            print("\n".join(ImageListing(skipped=bad).lines()), file=sys.stderr)
        if dist.is_main and synthetic.upscaled:
            print(f"synthetic teacher: {len(synthetic.upscaled)} photo(s) smaller than synthetic.crop="
                  f"{cfg.synthetic.crop} are used upscaled (photos at least the crop avoid it):", file=sys.stderr)
            print("\n".join(ImageListing(skipped=synthetic.upscaled).lines()), file=sys.stderr)
    clip = None
    if cfg.clip.enabled:
        # One batch holds both teachers' images, so with the synthetic teacher on, CLIP
        # crops take its size (DDP allows one forward per backward).
        crop = cfg.synthetic.crop if synthetic is not None else cfg.clip.crop
        clip = ClipLabelled(cfg.clip.labels, crop=crop, max_side=cfg.clip.max_side)
        n_clip = cfg.train.batch_size if synthetic is None else round(cfg.train.batch_size * cfg.clip.fraction)
    n_sources = 0 if synthetic is None else max(1, (cfg.train.batch_size - n_clip) // synthetic.group_size)

    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.train.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.train.warmup_steps, cfg.train.steps))
    state_path = out / "state.pt"
    start = 0
    if resume and state_path.is_file():
        start = load_state(state_path, map_location=device, model=net, optimizer=optimizer, scheduler=scheduler)
        if dist.is_main:
            print(f"resumed from {state_path} at step {start}", file=sys.stderr)

    writer = None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        writer.add_text("config", "```\n" + __import__("yaml").safe_dump(config_to_dict(cfg)) + "\n```", start)
    held_images = None
    if dist.is_main and held:
        from attiqa_loss.io import read_image

        # val.max_images=0 turns validation off (no held-out images read, no val/srcc logged).
        held_images = [read_image(f, max_side=cfg.val.max_side) for f in held[: cfg.val.max_images]] or None

    use_amp = cfg.train.amp and device.type == "cuda"
    weights = {"ranking": cfg.loss.ranking, "calibration": cfg.loss.calibration,
               "consistency": cfg.loss.consistency, "specificity": cfg.loss.specificity,
               "anchor": hard.anchor_weight, "anchor_large": hard.anchor_weight, "edge": hard.anchor_weight,
               "edge_invariance": hard.edge_invariance, "no_gain": hard.no_gain}
    model.train()
    t0, seen = time.perf_counter(), 0
    bar = tqdm(total=cfg.train.steps, initial=start, disable=not (progress and dist.is_main), unit="step", file=sys.stderr)
    last_val: Dict[str, float] = {}
    for step in range(start, cfg.train.steps):
        g = step_generator(cfg.train.seed, step, dist.rank)
        images, labels, groups, pairs, target = [], [], [], None, None
        if synthetic is not None:
            b = synthetic.sample(n_sources, g)
            images.append(b.images), labels.append(b.labels), groups.append(b.groups)
            pairs, target = b.pairs, b.target
        if clip is not None:
            xc, yc = clip.sample(n_clip, g)
            images.append(xc), labels.append(yc), groups.append(torch.full((len(xc),), -1))
        # Hardening (off by default: no extra draws from g, the same batches as before).
        # Adversarial twins follow the synthetic images (and share their groups, labels
        # and targets: specificity covers them); anchors and edge pairs come last, outside the ranking.
        pick = None
        if hard.adversarial > 0:
            if synthetic is not None:  # one of the graded levels of each group, never the pair crop
                gs = synthetic.group_size
                candidates = [i for i in range(len(b.labels)) if i % gs < gs - 1]
            else:
                candidates = list(range(n_clip))
            src_x, src_y, src_g = torch.cat(images), torch.cat(labels), torch.cat(groups)
            pick, twins = adversarial_twins(plain, hard, src_x, target, candidates, g, device, use_amp)
            at = 1 if synthetic is not None else len(images)
            images.insert(at, twins), labels.insert(at, src_y[pick]), groups.insert(at, src_g[pick])
            if target is not None:
                target = torch.cat([target, target[pick]])
        n_main = sum(len(t) for t in images)
        if hard.anchors > 0:
            anchor_x, anchor_y = sample_anchors(hard.anchors, images[0].shape[-1], g,
                                                smooth_noise_free=hard.smooth_noise_free,
                                                ramp_contrast=hard.ramp_contrast, full_labels=hard.full_labels)
            images.append(anchor_x)
        if hard.edge_pairs > 0:
            images.append(sample_edge_pairs(hard.edge_pairs, images[0].shape[-1], g))
        if hard.large_anchors > 0:  # drawn last: the draws above are the same with or without them
            large_x, large_y = sample_anchors(hard.large_anchors, hard.large_anchor_size, g,
                                              smooth_noise_free=hard.smooth_noise_free,
                                              ramp_contrast=hard.ramp_contrast, full_labels=hard.full_labels)
        x = torch.cat([t.to(device, non_blocking=True) for t in images])
        y = torch.cat(labels).to(device)
        grp = torch.cat(groups).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        n_syn = 0 if synthetic is None else len(b.labels) + (0 if pick is None else len(pick))
        # (No slice without anchors: the same autograd graph, so the same float sums, as before.)
        ranked = logits if n_main == len(logits) else logits[:n_main]
        terms = pretrain_losses(ranked.float(), y, grp, margin=cfg.loss.margin, delta=cfg.loss.delta)
        if synthetic is not None:
            # The synthetic images (and their twins) come first; only they have pairs and targets.
            syn_scores = torch.sigmoid(logits[:n_syn].float())
            terms["consistency"] = consistency_loss(syn_scores, pairs.to(device))
            terms["specificity"] = specificity_loss(syn_scores, grp[:n_syn], target.to(device))
        if pick is not None:
            # ``pick`` indexes the first block (synthetic, else CLIP); the twins follow it.
            twin_at = len(b.labels) if synthetic is not None else n_clip
            scores = torch.sigmoid(logits.float())
            terms["no_gain"] = no_gain_loss(scores[twin_at : twin_at + len(pick)], scores[pick.to(device)])
        if hard.anchors > 0:
            terms["anchor"] = calibration_loss(logits[n_main : n_main + hard.anchors].float(), anchor_y.to(device))
        if hard.edge_pairs > 0:
            edge_logits = logits[n_main + hard.anchors :].float()
            terms["edge"] = edge_ranking_loss(edge_logits[:, ATTRIBUTES.index("sharpness")], hard.edge_margin)
            if hard.edge_invariance > 0:
                terms["edge_invariance"] = edge_invariance_loss(torch.sigmoid(edge_logits))
        if hard.large_anchors > 0:
            # Their size differs from the batch's, so a second forward pass, with BatchNorm
            # on its running statistics (not updated), as inference sees an image. Through
            # ``plain``, not the DDP wrapper (as the adversarial twins): DDP's hooks sit on
            # the parameters, so this pass's gradient joins the one all-reduce of the
            # backward below, and DDP's forward bookkeeping runs once per step.
            with frozen_batchnorm(plain), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                large_logits = plain(large_x.to(device, non_blocking=True))
            terms["anchor_large"] = calibration_loss(large_logits.float(), large_y.to(device))
        loss = sum(weights[k] * v for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        seen += len(x)
        done = step + 1
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            logged = {k: float(all_reduce_mean(v.detach())) for k, v in terms.items()}
            if writer is not None:
                for k, v in logged.items():
                    writer.add_scalar(f"loss/{k}", v, done)
                writer.add_scalar("loss/total", sum(weights[k] * v for k, v in logged.items()), done)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], done)
                rate = seen / (time.perf_counter() - t0)
                writer.add_scalar("speed/images_per_s", rate, done)
                bar.set_postfix({k[:4]: f"{v:.3f}" for k, v in logged.items()} | {"img/s": f"{rate:.1f}"})
        if held_images is not None and (done % cfg.train.val_every == 0 or done == cfg.train.steps):
            last_val = validate(net, held_images, cfg.val.levels, device, synthetic.families)
            for k, v in last_val.items():
                writer.add_scalar(f"val/srcc/{k}", v, done)
            bar.write("val SRCC " + " ".join(f"{k}={v:.3f}" for k, v in last_val.items()))
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
            if dist.is_main:
                save_state(state_path, step=done, model=net, optimizer=optimizer, scheduler=scheduler)
            barrier()
        bar.update(1)
    bar.close()
    final = out / "checkpoint.safetensors"
    if dist.is_main:
        elapsed = time.perf_counter() - t0
        training = {
            "recipe": "attiqa-pretrain train",
            "teachers": [t for t, on in (("synthetic", cfg.synthetic.enabled), ("clip", cfg.clip.enabled)) if on],
            "config": config_to_dict(cfg),
            "steps": cfg.train.steps,
            "world_size": dist.world_size,
            "holdout_files": [str(f) for f in (held or [])],
            "skipped_files": [{"path": str(p), "reason": r} for p, r in skipped],
            "val_srcc": last_val,
            "wall_time_s_this_run": round(elapsed, 1),
        }
        save_checkpoint(net, final, training=training, dtype=torch.float16 if cfg.train.export_fp16 else None)
        if writer is not None:
            writer.add_hparams(
                {"backbone": cfg.model.backbone, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
                 "lr": cfg.train.lr},
                {f"hparam/srcc_{k}": v for k, v in last_val.items()} or {"hparam/steps": float(cfg.train.steps)},
                run_name="hparams",
            )
            writer.close()
        print(f"wrote {final}", file=sys.stderr)
    barrier()
    cleanup_distributed()
    return final


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", nargs="+", default=None, help="folders of pristine photos (synthetic teacher)")
    parser.add_argument("--labels", default=None, help="output folder of `attiqa-pretrain label` (enables the clip teacher)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUT from OUT/state.pt (refused without it, or with a config that "
                        "changes the result; reuses OUT/config.yaml when --config is not given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in OUT (its config, state, checkpoint and tb/ are deleted); without "
                        "--resume or --overwrite an OUT holding a run is refused")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    saved = Path(args.out) / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        args.config = saved  # --resume continues with the run's own config (--set may still change free keys)
    cfg = config_from_args(PretrainConfig, args)
    if args.images:
        cfg.synthetic.images = list(args.images)
    if args.labels:
        cfg.clip.labels, cfg.clip.enabled = args.labels, True
    try:
        train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"attiqa-pretrain train: {exc}") from None
    return 0
