"""``attiqa-pretrain label``: CLIP pseudo-labels for a folder or file list (ATTIQA stage 2).

For every image, five pseudo-labels in [0, 1] (quality-aligned: 1 = sharp, high
contrast, well lit, colourful, noise-free) and its fp16 CLIP embedding, written in
shards (format in :mod:`pretrain.clip.label_store`). Text features are computed once;
labels are computed from the fp16-rounded embeddings, so
:func:`~pretrain.clip.label_records.rescore` with the same prompts reproduces them
exactly without re-encoding any image.

This module is the command: its config (:class:`LabelConfig`), what to label
(:func:`scan_label_inputs`), its options and :func:`run`. The sharded, resumable,
rank-parallel labelling is :func:`pretrain.clip.label_job.label_files`; the run's plan
and manifest and :func:`rescore` are in :mod:`pretrain.clip.label_records`, and the
readers :func:`~pretrain.clip.label_store.read_labels` and
:func:`~pretrain.clip.label_store.read_embeddings` in :mod:`pretrain.clip.label_store`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

from attiqa_loss.io import ImageListing, scan_images
from attiqa_train.config import add_config_arguments, config_from_args, save_config
from attiqa_train.distributed import cleanup_distributed, env_local_rank, env_rank, init_distributed, resolve_device
from attiqa_train.rundir import RunFolderError, acquire_lock, lock_folder

from .label_job import label_files
from .label_records import build_plan, rescore
from .label_store import PLAN_NAME, check_plan, read_plan
from .model import ClipSection, add_clip_arguments, clip_argument_values, create_clip_teacher
from .prompts import default_prompt_set, load_prompt_set

__all__ = [
    "DESCRIPTION",
    "LabelConfig",
    "add_arguments",
    "run",
    "list_label_inputs",
    "scan_label_inputs",
]

DESCRIPTION = """CLIP pseudo-labels for unlabelled photos (ATTIQA stage 2, docs/method.md, section 4,
in the source repository).

  p_a = softmax(tau * [cos(f, t+), cos(f, t-)])[0]     per attribute a, tau = CLIP logit scale

Labels are in [0, 1] and quality-aligned: 1 = sharp, high contrast, well lit, colourful,
noise-free (noisiness 0.95 means clean). Output in --out: shard-NNNNN.safetensors (labels
(N, 5) float32, embeddings (N, D) float16, metadata paths), plan.json, manifest.json.
Run the same command again to resume after an interruption; launch with torchrun to
split the shards across processes. --rescore DIR re-scores the stored embeddings of an
earlier run with new --prompts without re-encoding images.

Examples:
  attiqa-pretrain label --images photos/ --out runs/labels --clip-model RN50 --clip-pretrained openai \\
      --prompts runs/prompts/prompts.yaml
  torchrun --nproc_per_node 4 -m pretrain.cli label --config configs/label_clip.yaml --images photos/ --out runs/labels
  attiqa-pretrain label --rescore runs/labels --prompts new.yaml --out runs/labels_v2"""


@dataclass
class DataSection:
    """What to label: a folder (searched recursively) and/or a text file of paths."""

    images: Optional[str] = None
    file_list: Optional[str] = None
    jpeg_draft: bool = True


@dataclass
class LabelSection:
    """Labelling job settings.

    Attributes:
        prompts: prompt-set YAML from select-prompts; null = the library default prompts.
        shard_size: images per shard (the unit of resumption and of work per rank).
        batch_size: images per encoder call.
        workers: DataLoader decode processes; null = min(4, CPU count).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        precision: "auto" (fp16 autocast on CUDA, fp32 on CPU), "fp32", "fp16", "bf16".
    """

    prompts: Optional[str] = None
    shard_size: int = 2048
    batch_size: int = 64
    workers: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError(f"shard_size and batch_size must be >= 1, got {self.shard_size}, {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {self.precision!r}")


@dataclass
class LabelConfig:
    clip: ClipSection = field(default_factory=ClipSection)
    data: DataSection = field(default_factory=DataSection)
    label: LabelSection = field(default_factory=LabelSection)


def list_label_inputs(images: Optional[Union[str, os.PathLike]] = None, file_list: Optional[Union[str, os.PathLike]] = None) -> List[Path]:
    """The sorted, de-duplicated absolute paths to label (:func:`scan_label_inputs` without
    the list of what was skipped)."""
    return scan_label_inputs(images, file_list).files


def scan_label_inputs(images: Optional[Union[str, os.PathLike]] = None,
                      file_list: Optional[Union[str, os.PathLike]] = None) -> ImageListing:
    """The sorted, de-duplicated absolute paths to label, and the folder entries skipped.

    Args:
        images: a folder, searched recursively for image files.
        file_list: a text file with one path per line (blank lines and ``#`` comments
            ignored; relative paths are relative to the list's folder). Listed files that
            do not exist are kept: they are skipped and reported like unreadable ones.

    The folder is listed by :func:`attiqa_loss.io.scan_images` (the lister of every
    command): what it skips (files that are not images, dangling symlinks, ...) is in
    :attr:`~attiqa_loss.io.ImageListing.skipped` with the reason.

    Raises:
        ValueError: neither source given. FileNotFoundError: a source does not exist.
    """
    if images is None and file_list is None:
        raise ValueError("nothing to label: give --images DIR and/or --file-list TXT")
    found: List[Path] = []
    skipped: List[Tuple[Path, str]] = []
    if images is not None:
        if not Path(images).is_dir():
            raise FileNotFoundError(f"--images must be a folder, got {images}")
        listing = scan_images([images])
        found += [p.resolve() for p in listing.files]
        skipped += listing.skipped
    if file_list is not None:
        lst = Path(file_list)
        if not lst.is_file():
            raise FileNotFoundError(f"file list not found: {lst}")
        for line in lst.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line).expanduser()
            found.append((p if p.is_absolute() else lst.parent / p).resolve())
    return ImageListing(files=sorted(set(found)), skipped=skipped)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", type=Path, help="folder of images to label (searched recursively); overrides data.images")
    parser.add_argument("--file-list", type=Path, help="text file with one image path per line; overrides data.file_list")
    add_clip_arguments(parser)
    parser.add_argument("--prompts", type=Path, help="prompt-set YAML from select-prompts; overrides label.prompts")
    parser.add_argument("--workers", type=int, help="DataLoader decode processes (default min(4, CPU count))")
    parser.add_argument("--rescore", type=Path, metavar="RUN_DIR", help="re-score the embeddings of a finished run instead of encoding images")


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise SystemExit(f"error: --workers: workers must be >= 0, got {args.workers}")
    flags = {"data.images": args.images, "data.file_list": args.file_list, "label.prompts": args.prompts}
    values = {key: str(value) for key, value in flags.items() if value is not None}
    if args.workers is not None:
        values["label.workers"] = args.workers
    cfg = config_from_args(LabelConfig, args, values={**clip_argument_values(args), **values})

    if args.rescore is not None:
        if env_rank() != 0:
            return 0
        try:
            with acquire_lock(args.out, "attiqa-pretrain label --rescore"):
                paths, _ = rescore(
                    args.rescore, cfg.label.prompts, cfg.clip.model, cfg.clip.pretrained,
                    tau=cfg.clip.tau, init_seed=cfg.clip.init_seed, dest=args.out,
                )
                save_config(cfg, Path(args.out) / "config.yaml")
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"rescored {len(paths)} images from {args.rescore} into {args.out}", file=sys.stderr)
        return 0

    try:
        listing = scan_label_inputs(cfg.data.images, cfg.data.file_list)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    files = listing.files
    if listing.skipped and env_rank() == 0:
        print(f"attiqa-pretrain label: {listing.summary()}", file=sys.stderr)
    if not files:
        raise SystemExit(f"error: no image files found in {cfg.data.images or cfg.data.file_list}")
    try:
        prompt_set = load_prompt_set(cfg.label.prompts) if cfg.label.prompts else default_prompt_set()
        teacher = create_clip_teacher(
            cfg.clip.model, cfg.clip.pretrained, device=resolve_device(cfg.label.device, env_local_rank()),
            tau=cfg.clip.tau,
            init_seed=cfg.clip.init_seed,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    info = init_distributed(cfg.label.device)
    held = None
    try:
        try:
            # One process (one torchrun job) per output folder: the lock is taken before
            # anything is written there, and held until the manifest is written.
            held = lock_folder(args.out, "attiqa-pretrain label", is_main=info.is_main, device=info.device)
        except RunFolderError as exc:
            raise SystemExit(f"error: {exc}") from None
        if (Path(args.out) / PLAN_NAME).is_file():
            # A folder labelled from another file list, model or prompts is refused before
            # anything is written there (its config.yaml stays the one of its labels).
            wanted = build_plan(sorted({Path(f) for f in files}), cfg.label.shard_size, teacher, prompt_set,
                           cfg.clip.init_seed, cfg.data.jpeg_draft)
            try:
                check_plan(read_plan(args.out), wanted, args.out)
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
        if info.is_main:
            save_config(cfg, Path(args.out) / "config.yaml")
        label_files(
            files,
            args.out,
            teacher,
            prompt_set,
            shard_size=cfg.label.shard_size,
            batch_size=cfg.label.batch_size,
            workers=cfg.label.workers,
            precision=cfg.label.precision,
            jpeg_draft=cfg.data.jpeg_draft,
            init_seed=cfg.clip.init_seed,
            dist_info=info,
            prompts_source=cfg.label.prompts or "default (attiqa_loss.ATTRIBUTES.prompts x DEFAULT_TEMPLATES)",
            lock=False,
            listing_skipped=listing.skipped,
        )
    finally:
        if held is not None:
            held.release()
        cleanup_distributed()
    return 0
