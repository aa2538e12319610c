"""A labelling run's records, and re-scoring a finished run with other prompts.

:func:`build_plan` is the content of ``plan.json`` (files, shard size, CLIP model and
prompts: what a resumed run must match), :func:`build_manifest` that of
``manifest.json`` (counts, skipped files, throughput), read back from the shards.
:func:`rescore` re-scores the stored fp16 embeddings of a finished run with new prompts
(no image is re-encoded) and can write a complete new run folder. File formats:
:mod:`pretrain.clip.label_store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_train.files import write_json

from .label_store import (LABELS_FORMAT, MANIFEST_NAME, PLAN_NAME, check_plan, missing_shards, read_plan, read_shard,
                          read_shard_metadata, shard_path, write_shard)
from .model import create_clip_teacher
from .prompts import PromptSet, default_prompt_set, load_prompt_set, prompt_set_to_dict
from .teacher import ClipTeacher, pseudo_labels

__all__ = ["build_manifest", "build_plan", "rescore"]


def build_plan(files: Sequence[Path], shard_size: int, teacher: ClipTeacher, prompt_set: PromptSet, init_seed: int, draft: bool) -> Dict[str, Any]:
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


def build_manifest(out_dir: Path, plan, prompts_source, world, images, elapsed, written, num_shards) -> Dict[str, Any]:
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
        write_json(dest_path / MANIFEST_NAME, build_manifest(dest_path, new_plan, source, 1, 0, 0.0, int(plan["num_shards"]), int(plan["num_shards"])))
    return paths_all, labels_out
