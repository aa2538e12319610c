"""Labelling a file list into shards (:func:`label_files`), the work of ``attiqa-pretrain label``.

The sorted file list is cut into fixed shards; under ``torchrun`` rank ``r`` labels
shards ``k`` with ``k % world_size == r``; a shard is done iff its file exists, so a
killed run resumes without redoing finished shards; unreadable files are skipped and
listed. Decoding and CLIP preprocessing run in DataLoader workers. Labels are computed
from the fp16-rounded embeddings that are stored, so a rescore with the same prompts
reproduces them exactly. The run's ``plan.json`` and ``manifest.json`` are built in
:mod:`pretrain.clip.label_records`, the shard files written by
:mod:`pretrain.clip.label_store`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_train.distributed import DistInfo, barrier
from attiqa_train.files import write_json
from attiqa_train.rundir import lock_folder

from .label_records import build_manifest, build_plan
from .label_store import MANIFEST_NAME, PLAN_NAME, check_plan, read_plan, shard_path, write_shard
from .prompts import PromptSet, default_prompt_set
from .teacher import ClipTeacher, load_clip_image, pseudo_labels

__all__ = ["label_files"]


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
    plan = build_plan(files, shard_size, teacher, prompt_set, init_seed, jpeg_draft)
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
    manifest = build_manifest(
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
