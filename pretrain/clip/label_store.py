"""On-disk format of a labelling run (written by ``attiqa-pretrain label``).

A run folder holds::

    plan.json                  what is being labelled: sorted file list, shard size, CLIP
                               model and prompts (a resumed run must match it)
    shard-00000.safetensors    shard k = files[k * shard_size : (k + 1) * shard_size]
    ...                        tensors: labels (N, 5) float32 in ATTRIBUTES order,
                               quality-aligned (1 = desirable pole); embeddings (N, D)
                               float16, L2-normalised CLIP image features.
                               metadata: paths (JSON list of the N labelled files),
                               skipped (JSON list of {path, error}), shard, format
    manifest.json              written last, by rank 0: model, prompts, tau, counts,
                               skipped files, throughput

A shard is finished if and only if its file exists (it is written to a temporary file
and renamed), so a killed run resumes by skipping existing shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.io import atomic_path

__all__ = [
    "LABELS_FORMAT",
    "PLAN_NAME",
    "MANIFEST_NAME",
    "shard_path",
    "write_shard",
    "read_shard",
    "read_shard_metadata",
    "read_plan",
    "check_plan",
    "read_labels",
    "read_embeddings",
    "missing_shards",
]

LABELS_FORMAT = "attiqa-labels"
PLAN_NAME = "plan.json"
MANIFEST_NAME = "manifest.json"
PathLike = Union[str, os.PathLike]


def shard_path(out_dir: PathLike, index: int) -> Path:
    return Path(out_dir) / f"shard-{index:05d}.safetensors"




def write_shard(
    out_dir: PathLike,
    index: int,
    paths: Sequence[str],
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    skipped: Sequence[Mapping[str, str]] = (),
) -> Path:
    """Write shard ``index`` atomically.

    Args:
        paths: the N labelled files, in order.
        labels: ``(N, 5)`` pseudo-labels in [0, 1] (stored float32).
        embeddings: ``(N, D)`` unit-norm image features (stored float16).
        skipped: ``{"path", "error"}`` of the shard's files that could not be read.
    """
    n = len(paths)
    if labels.shape != (n, len(ATTRIBUTES)):
        raise ValueError(f"labels must be ({n}, {len(ATTRIBUTES)}), got {tuple(labels.shape)}")
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"embeddings must be ({n}, D), got {tuple(embeddings.shape)}")
    tensors = {
        "labels": labels.detach().to("cpu", torch.float32).contiguous(),
        "embeddings": embeddings.detach().to("cpu", torch.float16).contiguous(),
    }
    metadata = {
        "format": LABELS_FORMAT,
        "shard": str(index),
        "attributes": json.dumps(list(ATTRIBUTES)),
        "paths": json.dumps(list(paths)),
        "skipped": json.dumps([dict(s) for s in skipped]),
    }
    path = shard_path(out_dir, index)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_shard_metadata(path: PathLike) -> Dict[str, Any]:
    """Decoded metadata of one shard (``paths`` and ``skipped`` as lists)."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("format") != LABELS_FORMAT:
        raise ValueError(f"{path} is not an {LABELS_FORMAT} shard (format={raw.get('format')!r})")
    if json.loads(raw.get("attributes", "[]")) != list(ATTRIBUTES):
        raise ValueError(f"{path} stores attributes {raw.get('attributes')}; expected {list(ATTRIBUTES)}")
    return {
        "shard": int(raw["shard"]),
        "paths": json.loads(raw["paths"]),
        "skipped": json.loads(raw.get("skipped", "[]")),
    }


def read_shard(path: PathLike, names: Sequence[str] = ("labels", "embeddings")) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """``(metadata, {name: tensor})`` of one shard; only the named tensors are loaded."""
    meta = read_shard_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {n: f.get_tensor(n) for n in names}
    return meta, tensors


def read_plan(out_dir: PathLike) -> Dict[str, Any]:
    path = Path(out_dir) / PLAN_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} is not a labelling run folder: {PLAN_NAME} not found")
    plan = json.loads(path.read_text())
    if plan.get("format") != LABELS_FORMAT:
        raise ValueError(f"{path} is not an {LABELS_FORMAT} plan (format={plan.get('format')!r})")
    return plan


def check_plan(existing: Mapping[str, Any], wanted: Mapping[str, Any], out_dir: PathLike) -> None:
    """Refuse to resume into a folder labelled from other files, model or prompts."""
    differs = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
    if differs:
        raise ValueError(
            f"{out_dir} holds a labelling run with different {differs}; resuming would mix "
            f"incompatible shards. Use a new --out folder (or delete {out_dir})."
        )


def missing_shards(out_dir: PathLike, num_shards: Optional[int] = None) -> List[int]:
    """Indices of shards not written yet."""
    if num_shards is None:
        num_shards = int(read_plan(out_dir)["num_shards"])
    return [k for k in range(num_shards) if not shard_path(out_dir, k).is_file()]


def _read_all(out_dir: PathLike, name: str) -> Tuple[List[str], torch.Tensor]:
    plan = read_plan(out_dir)
    missing = missing_shards(out_dir, int(plan["num_shards"]))
    if missing:
        raise FileNotFoundError(
            f"labelling in {out_dir} is incomplete: {len(missing)} shard(s) missing (first {missing[:5]}); "
            "run the same label command again to resume"
        )
    paths: List[str] = []
    chunks = []
    for k in range(int(plan["num_shards"])):
        meta, tensors = read_shard(shard_path(out_dir, k), (name,))
        paths += meta["paths"]
        chunks.append(tensors[name])
    width = len(ATTRIBUTES) if name == "labels" else int(plan.get("embedding_dim", 0))
    dtype = torch.float32 if name == "labels" else torch.float16
    values = torch.cat(chunks) if chunks else torch.zeros(0, width, dtype=dtype)
    return paths, values


def read_labels(out_dir: PathLike) -> Tuple[List[str], torch.Tensor]:
    """All pseudo-labels of a finished labelling run.

    Returns:
        ``(paths, labels)``: the N labelled files (skipped ones are absent) and ``(N, 5)``
        float32 labels in :data:`ATTRIBUTES` order, in [0, 1], quality-aligned
        (1 = sharp, high contrast, well lit, colourful, noise-free).

    Raises:
        FileNotFoundError: ``out_dir`` is not a run folder, or shards are missing.
    """
    paths, labels = _read_all(out_dir, "labels")
    return paths, labels.float()


def read_embeddings(out_dir: PathLike) -> Tuple[List[str], torch.Tensor]:
    """``(paths, embeddings)``: ``(N, D)`` float16 L2-normalised CLIP image features, same order as :func:`read_labels`."""
    return _read_all(out_dir, "embeddings")
