"""``attiqa-pretrain label``: CLIP pseudo-labels for a folder or file list (ATTIQA stage 2).

For every image, five pseudo-labels in [0, 1] (quality-aligned: 1 = sharp, high
contrast, well lit, colourful, noise-free) and its fp16 CLIP embedding, written in
shards (format in :mod:`pretrain.label_store`). Text features are computed once; labels
are computed from the fp16-rounded embeddings, so :func:`rescore` with the same prompts
reproduces them exactly without re-encoding any image.

Scale: the sorted file list is cut into fixed shards; under ``torchrun`` rank ``r``
labels shards ``k`` with ``k % world_size == r``; a shard is done iff its file exists,
so a killed run resumes without redoing finished shards; unreadable files are skipped
and listed. Decoding and CLIP preprocessing run in DataLoader workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.io import ImageListing, scan_images

from .clip_model import (
    ClipSection,
    ClipTeacher,
    add_clip_arguments,
    apply_clip_arguments,
    create_clip_teacher,
    load_clip_image,
    pseudo_labels,
)
from attiqa_train.config import add_config_arguments, config_from_args, save_config
from attiqa_train.distributed import (DistInfo, barrier, cleanup_distributed, env_local_rank, env_rank, init_distributed,
                                      resolve_device)
from .label_store import (
    LABELS_FORMAT,
    MANIFEST_NAME,
    PLAN_NAME,
    check_plan,
    missing_shards,
    read_labels,
    read_embeddings,
    read_plan,
    read_shard,
    read_shard_metadata,
    shard_path,
    write_shard,
)
from .prompts import PromptSet, default_prompt_set, load_prompt_set, prompt_set_to_dict
from attiqa_train.files import write_json
from attiqa_train.rundir import RunFolderError, acquire_lock, lock_folder

__all__ = [
    "DESCRIPTION",
    "LabelConfig",
    "add_arguments",
    "run",
    "list_label_inputs",
    "scan_label_inputs",
    "label_files",
    "read_labels",
    "read_embeddings",
    "rescore",
]

DESCRIPTION = """CLIP pseudo-labels for unlabelled photos (ATTIQA stage 2, docs/method.md, section 4).

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


class _ClipImages(torch.utils.data.Dataset):
    """Decodes files to CLIP-sized uint8 tensors in worker processes; failures are reported, not raised."""

    def __init__(self, files: Sequence[str], size: Tuple[int, int], resize_mode: str, draft: bool) -> None:
        self.files, self.size, self.resize_mode, self.draft = list(files), size, resize_mode, draft

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            return load_clip_image(self.files[index], self.size, self.resize_mode, draft=self.draft), index, ""
        except Exception as exc:  # any decoder failure is per-file: skip it and list it
            return None, index, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    ok = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in ok]) if ok else None
    return images, [b[1] for b in ok], [(b[1], b[2]) for b in batch if b[0] is None]


def _autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _plan(files: Sequence[Path], shard_size: int, teacher: ClipTeacher, prompt_set: PromptSet, init_seed: int, draft: bool) -> Dict[str, Any]:
    return {
        "format": LABELS_FORMAT,
        "version": 1,
        "files": [str(f) for f in files],
        "shard_size": int(shard_size),
        "num_shards": (len(files) + shard_size - 1) // shard_size,
        "clip": {**teacher.describe(), "init_seed": int(init_seed)},
        "prompts": prompt_set_to_dict(prompt_set)["attributes"],
        "embedding_dim": teacher.embed_dim,
        "jpeg_draft": bool(draft),
    }


def _sum_over_ranks(values: Sequence[float], op=None) -> List[float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def label_files(
    files: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike],
    teacher: ClipTeacher,
    prompt_set: Optional[PromptSet] = None,
    *,
    shard_size: int = 2048,
    batch_size: int = 64,
    workers: Optional[int] = None,
    precision: str = "auto",
    jpeg_draft: bool = True,
    init_seed: int = 0,
    dist_info: Optional[DistInfo] = None,
    prompts_source: str = "default",
    on_shard_written: Optional[Callable[[int, Path], None]] = None,
    progress: bool = True,
    lock: bool = True,
    listing_skipped: Sequence[Tuple[Union[str, os.PathLike], str]] = (),
) -> Optional[Dict[str, Any]]:
    """Label ``files`` into ``out_dir`` (resumable, sharded, rank-parallel).

    Args:
        files: images to label; sorted and de-duplicated here, so shard ``k`` is always the
            same slice.
        out_dir: run folder (created). A folder with a ``plan.json`` for other files,
            model or prompts is refused.
        teacher: the CLIP model (:func:`create_clip_teacher`); under torchrun every rank
            builds its own.
        prompt_set: prompts per attribute; default :func:`default_prompt_set`.
        shard_size, batch_size, workers, precision, jpeg_draft: see :class:`LabelSection`.
        init_seed: recorded in the plan (the seed the teacher's random weights came from).
        dist_info: rank and world size (default: single process).
        prompts_source: where the prompts came from (recorded in the manifest).
        on_shard_written: called as ``fn(index, path)`` after each shard is written (tests
            use it to simulate a kill).
        progress: show a tqdm bar (rank 0 only).
        lock: hold ``out_dir``'s lock file while labelling (a second process is refused,
            see :mod:`attiqa_train.rundir`); False when the caller holds it already.
        listing_skipped: ``(path, reason)`` of folder entries the listing left out
            (:func:`scan_label_inputs`); recorded in the manifest (``listing_skipped``).

    Returns:
        The manifest on rank 0, ``None`` on other ranks.

    Raises:
        RunLockError: another running process is labelling into ``out_dir``.
    """
    info = dist_info or DistInfo(rank=0, world_size=1, local_rank=0, device=teacher.device)
    held = lock_folder(out_dir, "attiqa-pretrain label", is_main=info.is_main, device=info.device) if lock else None
    try:
        return _label_files(files, out_dir, teacher, prompt_set, shard_size=shard_size, batch_size=batch_size,
                            workers=workers, precision=precision, jpeg_draft=jpeg_draft, init_seed=init_seed,
                            info=info, prompts_source=prompts_source, on_shard_written=on_shard_written,
                            progress=progress, listing_skipped=listing_skipped)
    finally:
        if held is not None:
            held.release()


def _label_files(files, out_dir, teacher, prompt_set, *, shard_size, batch_size, workers, precision, jpeg_draft,
                 init_seed, info, prompts_source, on_shard_written, progress,
                 listing_skipped=()) -> Optional[Dict[str, Any]]:
    from tqdm import tqdm

    prompt_set = prompt_set or default_prompt_set()
    files = sorted({Path(f) for f in files})
    out_dir = Path(out_dir)
    plan = _plan(files, shard_size, teacher, prompt_set, init_seed, jpeg_draft)
    plan_path = out_dir / PLAN_NAME
    # Every rank checks an existing plan before the barrier, so a mismatch stops all of
    # them instead of leaving the others waiting for rank 0.
    existed = plan_path.is_file()
    if existed:
        check_plan(read_plan(out_dir), plan, out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not existed:
            write_json(plan_path, plan)
        # Temporary shard files of writers that were killed. Only those of dead processes on
        # this host: a running writer's file is never touched (another process labelling
        # here would hold the lock, but a caller passing lock=False is not protected by it).
        from attiqa_loss.io import orphan_temp_files

        for stale in orphan_temp_files(out_dir):
            if stale.name.startswith(".shard-"):
                stale.unlink(missing_ok=True)
    barrier()
    if not info.is_main:
        check_plan(read_plan(out_dir), plan, out_dir)

    num_shards = plan["num_shards"]
    mine = [k for k in range(num_shards) if k % info.world_size == info.rank]
    pending = [k for k in mine if not shard_path(out_dir, k).is_file()]
    resumed = len(mine) - len(pending)

    items: List[str] = []
    batches: List[List[int]] = []
    batch_shard: List[int] = []
    batches_left: Dict[int, int] = {}
    for k in pending:
        start = len(items)
        items += [str(f) for f in files[k * shard_size : (k + 1) * shard_size]]
        idx = list(range(start, len(items)))
        chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        batches += chunks
        batch_shard += [k] * len(chunks)
        batches_left[k] = len(chunks)

    poles = teacher.attribute_features(prompt_set)  # once per run
    autocast = _autocast_dtype(precision, teacher.device)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    dataset = _ClipImages(items, teacher.image_size, teacher.resize_mode, jpeg_draft)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers if items else 0,
        collate_fn=_collate,
        pin_memory=teacher.device.type == "cuda",
        persistent_workers=False,
    )

    acc: Dict[int, Dict[str, list]] = {}
    written = 0
    bar = tqdm(
        total=len(items), unit="img", desc=f"label (rank {info.rank})" if info.distributed else "label",
        disable=not (progress and info.is_main), file=sys.stderr, dynamic_ncols=True,
    )
    start_time = time.perf_counter()
    for b, (images, ok, failed) in enumerate(loader):
        k = batch_shard[b]
        slot = acc.setdefault(k, {"paths": [], "labels": [], "emb": [], "skipped": []})
        if images is not None:
            emb = teacher.encode_images(images, autocast=autocast).half()
            # Labels from the stored fp16 features, so rescore() reproduces them exactly.
            slot["labels"].append(pseudo_labels(emb.float(), poles, teacher.tau).cpu())
            slot["emb"].append(emb.cpu())
            slot["paths"] += [items[i] for i in ok]
        slot["skipped"] += [{"path": items[i], "error": err} for i, err in failed]
        bar.update(len(ok) + len(failed))
        batches_left[k] -= 1
        if batches_left[k] == 0:
            done = acc.pop(k)
            dim = teacher.embed_dim
            path = write_shard(
                out_dir,
                k,
                done["paths"],
                torch.cat(done["labels"]) if done["labels"] else torch.zeros(0, len(ATTRIBUTES)),
                torch.cat(done["emb"]) if done["emb"] else torch.zeros(0, dim, dtype=torch.float16),
                done["skipped"],
            )
            written += 1
            if on_shard_written is not None:
                on_shard_written(k, path)
    bar.close()
    elapsed = time.perf_counter() - start_time

    total_images, total_written = _sum_over_ranks([len(items), written])
    (max_elapsed,) = _sum_over_ranks([elapsed], dist.ReduceOp.MAX if dist.is_available() else None)
    barrier()
    if not info.is_main:
        return None
    manifest = _manifest(
        out_dir, plan, prompts_source, info.world_size, total_images, max_elapsed, int(total_written), num_shards
    )
    manifest["listing_skipped"] = [{"path": str(p), "reason": r} for p, r in listing_skipped]
    write_json(out_dir / MANIFEST_NAME, manifest)
    rate = manifest["run"]["images_per_s"]
    not_listed = f", {len(listing_skipped)} folder entries not listed" if listing_skipped else ""
    print(
        f"labelled {manifest['counts']['labelled']} images ({manifest['counts']['skipped']} skipped{not_listed}) "
        f"in {out_dir}; this run: {int(total_images)} images in {max_elapsed:.1f} s = {rate:.1f} images/s",
        file=sys.stderr,
    )
    return manifest


def _manifest(out_dir: Path, plan, prompts_source, world, images, elapsed, written, num_shards) -> Dict[str, Any]:
    labelled, skipped = 0, []
    for k in range(num_shards):
        meta = read_shard_metadata(shard_path(out_dir, k))
        labelled += len(meta["paths"])
        skipped += meta["skipped"]
    return {
        "format": LABELS_FORMAT,
        "version": 1,
        "attributes": list(ATTRIBUTES),
        "label_definition": "p = softmax(tau * [cos(f, t+), cos(f, t-)])[0]; 1 = desirable pole",
        "model": plan["clip"]["model"],
        "pretrained": plan["clip"]["pretrained"],
        "clip": plan["clip"],
        "tau": plan["clip"]["tau"],
        "prompts_source": prompts_source,
        "prompts": plan["prompts"],
        "embedding_dim": plan["embedding_dim"],
        "shard_size": plan["shard_size"],
        "num_shards": num_shards,
        "counts": {"files": len(plan["files"]), "labelled": labelled, "skipped": len(skipped)},
        "skipped_count": len(skipped),
        "skipped": skipped,
        "run": {
            "world_size": world,
            "images_this_run": int(images),
            "shards_written_this_run": written,
            "shards_already_done": num_shards - written,
            "elapsed_s": round(float(elapsed), 3),
            "images_per_s": round(float(images) / elapsed, 3) if elapsed > 0 and images else 0.0,
        },
    }


def rescore(
    out_dir: Union[str, os.PathLike],
    prompts_yaml: Optional[Union[str, os.PathLike]],
    clip_model: str,
    clip_pretrained: Optional[str],
    *,
    tau: Optional[float] = None,
    init_seed: int = 0,
    dest: Optional[Union[str, os.PathLike]] = None,
    device: Union[str, torch.device] = "cpu",
) -> Tuple[List[str], torch.Tensor]:
    """Re-score the stored embeddings of a finished run with other prompts (no image is re-encoded).

    Args:
        out_dir: a finished labelling run.
        prompts_yaml: prompt-set YAML; ``None`` = the library default prompts.
        clip_model, clip_pretrained: must be the model that produced the embeddings (its
            text tower encodes the new prompts); a different one is refused.
        tau: temperature; default the model's logit scale.
        init_seed: seed of random weights (must match the run's when weights are "none").
        dest: if given, write a complete run folder there (same embeddings, new labels).

    Returns:
        ``(paths, labels)`` as :func:`read_labels`: ``(N, 5)`` float32, quality-aligned.
    """
    plan = read_plan(out_dir)
    teacher = create_clip_teacher(clip_model, clip_pretrained, device=device, tau=tau, init_seed=init_seed)
    ours = {**teacher.describe(), "init_seed": int(init_seed)}
    theirs = dict(plan["clip"])
    keys = ("model", "pretrained", "image_size", "init_seed")
    if any(ours[k] != theirs.get(k) for k in keys):
        raise ValueError(
            f"{out_dir} was labelled with CLIP {[theirs.get(k) for k in keys]}, but rescore got "
            f"{[ours[k] for k in keys]} (model, pretrained, image_size, init_seed): text features "
            "of another model do not match the stored image embeddings"
        )
    prompt_set = load_prompt_set(prompts_yaml) if prompts_yaml else default_prompt_set()
    poles = teacher.attribute_features(prompt_set)
    paths_all: List[str] = []
    labels_all = []
    dest_path = Path(dest) if dest is not None else None
    if dest_path is not None:
        new_plan = {**plan, "clip": ours, "prompts": prompt_set_to_dict(prompt_set)["attributes"]}
        if (dest_path / PLAN_NAME).is_file():
            check_plan(read_plan(dest_path), new_plan, dest_path)
        write_json(dest_path / PLAN_NAME, new_plan)
    missing = missing_shards(out_dir, int(plan["num_shards"]))
    if missing:
        raise FileNotFoundError(f"{out_dir} is unfinished ({len(missing)} shard(s) missing, first {missing[:5]}); resume it first")
    for k in range(int(plan["num_shards"])):
        meta, tensors = read_shard(shard_path(out_dir, k))
        emb = tensors["embeddings"]
        labels = pseudo_labels(emb.float().to(teacher.device), poles, teacher.tau).cpu()
        paths_all += meta["paths"]
        labels_all.append(labels)
        if dest_path is not None:
            write_shard(dest_path, k, meta["paths"], labels, emb, meta["skipped"])
    labels_out = torch.cat(labels_all) if labels_all else torch.zeros(0, len(ATTRIBUTES))
    if dest_path is not None:
        source = f"{prompts_yaml} (rescored from {out_dir})" if prompts_yaml else f"default (rescored from {out_dir})"
        write_json(dest_path / MANIFEST_NAME, _manifest(dest_path, new_plan, source, 1, 0, 0.0, int(plan["num_shards"]), int(plan["num_shards"])))
    return paths_all, labels_out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", type=Path, help="folder of images to label (searched recursively); overrides data.images")
    parser.add_argument("--file-list", type=Path, help="text file with one image path per line; overrides data.file_list")
    add_clip_arguments(parser)
    parser.add_argument("--prompts", type=Path, help="prompt-set YAML from select-prompts; overrides label.prompts")
    parser.add_argument("--workers", type=int, help="DataLoader decode processes (default min(4, CPU count))")
    parser.add_argument("--rescore", type=Path, metavar="RUN_DIR", help="re-score the embeddings of a finished run instead of encoding images")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(LabelConfig, args)
    apply_clip_arguments(cfg.clip, args)
    if args.images is not None:
        cfg.data.images = str(args.images)
    if args.file_list is not None:
        cfg.data.file_list = str(args.file_list)
    if args.prompts is not None:
        cfg.label.prompts = str(args.prompts)
    if args.workers is not None:
        try:
            cfg.label = dataclasses.replace(cfg.label, workers=args.workers)
        except ValueError as exc:
            raise SystemExit(f"error: --workers: {exc}") from None

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
            wanted = _plan(sorted({Path(f) for f in files}), cfg.label.shard_size, teacher, prompt_set,
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
