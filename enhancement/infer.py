"""``attiqa-enhance infer``: run a trained enhancer over a folder and score before/after."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet
from attiqa_loss.io import atomic_write, list_images, read_image, save_image
from attiqa_loss.validation import MIN_SIZE

__all__ = ["SCORES_FILENAME", "score_columns", "enhance_files", "write_scores_csv", "summarize", "list_inputs"]

SCORES_FILENAME = "scores.csv"


def score_columns() -> List[str]:
    """CSV header: ``path`` then ``<attribute>_before``, ``<attribute>_after`` per attribute."""
    return ["path"] + [f"{name}_{when}" for name in ATTRIBUTES for when in ("before", "after")]


@torch.no_grad()
def enhance_files(
    model: nn.Module,
    files: Sequence[Path],
    root: Path,
    out_dir: Path,
    *,
    quality: Optional[AttiqaNet],
    device: torch.device,
    progress: bool = True,
) -> Tuple[List[Dict[str, object]], List[Tuple[str, str]]]:
    """Enhance each image (any size) and save it under ``out_dir`` with its path relative to ``root``.

    Args:
        model: the enhancer, ``(1, 3, H, W)`` in [0, 1] -> same shape.
        files: image files under ``root``.
        root: the input folder (output names mirror it).
        out_dir: where enhanced images go (same names and formats).
        quality: scores attributes before and after (quality-aligned, 1 = desirable), or None.
        device: where to run.
        progress: show a tqdm bar on stderr.

    Returns:
        ``(rows, failures)``: one row per enhanced image (``path`` plus ``<attr>_before``/
        ``<attr>_after``, empty for images under 32x32 or without ``quality``) and
        ``(path, reason)`` per image that could not be read or written.
    """
    from tqdm.auto import tqdm

    model = model.to(device).eval()
    rows: List[Dict[str, object]] = []
    failures: List[Tuple[str, str]] = []
    for path in tqdm(files, unit="img", disable=not progress, file=sys.stderr):
        rel = path.relative_to(root)
        try:
            image = read_image(path)
        except Exception as exc:  # one unreadable file must not stop the folder
            failures.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        x = image[None].to(device)
        out = model(x).float().clamp(0, 1)
        try:
            save_image(out[0], out_dir / rel)
        except (OSError, ValueError) as exc:
            failures.append((str(path), f"cannot write {out_dir / rel}: {exc}"))
            continue
        row: Dict[str, object] = {"path": str(rel)}
        if quality is not None and min(x.shape[-2:]) >= MIN_SIZE:
            before, after = quality(x)[0].tolist(), quality(out)[0].tolist()
            for i, name in enumerate(ATTRIBUTES):
                row[f"{name}_before"], row[f"{name}_after"] = f"{before[i]:.6f}", f"{after[i]:.6f}"
        rows.append(row)
    return rows, failures


def write_scores_csv(rows: Sequence[Dict[str, object]], path: Path) -> None:
    """Write the rows of :func:`enhance_files` as CSV (atomic)."""
    with atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=score_columns(), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: Sequence[Dict[str, object]]) -> str:
    """Mean score per attribute before and after, as a small table."""
    lines = [f"{'attribute':<13} {'before':>8} {'after':>8}   (quality-aligned, 1 = desirable)"]
    for name in ATTRIBUTES:
        vals = [(float(r[f"{name}_before"]), float(r[f"{name}_after"])) for r in rows if f"{name}_before" in r]
        if vals:
            b = sum(v[0] for v in vals) / len(vals)
            a = sum(v[1] for v in vals) / len(vals)
            lines.append(f"{name:<13} {b:>8.3f} {a:>8.3f}")
    return "\n".join(lines)


def list_inputs(data: Path) -> List[Path]:
    """Images to enhance: every image under ``data`` (a folder), or ``data`` itself."""
    return list_images([data])
