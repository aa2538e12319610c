"""``attiqa-enhance infer``: run a trained enhancer over a folder and score before/after."""

from __future__ import annotations

import csv
import errno
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet
from attiqa_loss.io import ImageListing, atomic_write, read_image, read_image_with_info, save_image, scan_images
from attiqa_loss.checks import MIN_SIZE

from .infer_record import input_stat

__all__ = [
    "SCORES_FILENAME",
    "OUTPUT_FORMATS",
    "DEFAULT_JPEG_QUALITY",
    "score_columns",
    "output_name",
    "output_collisions",
    "enhance_files",
    "write_scores_csv",
    "summarize",
    "list_inputs",
    "scan_inputs",
]

SCORES_FILENAME = "scores.csv"
#: ``--format`` choices: the input's own format, or PNG / JPEG for every output.
OUTPUT_FORMATS = ("same", "png", "jpg")
#: JPEG (and WebP) quality of the outputs unless ``--quality`` says otherwise.
DEFAULT_JPEG_QUALITY = 95
_SUFFIXES = {"png": (".png",), "jpg": (".jpg", ".jpeg")}


def score_columns() -> List[str]:
    """CSV header: ``path`` (the input, relative to the input folder), then
    ``<attribute>_before``, ``<attribute>_after`` per attribute, then ``output`` (the
    written file, relative to the output folder)."""
    return ["path"] + [f"{name}_{when}" for name in ATTRIBUTES for when in ("before", "after")] + ["output"]


def output_name(rel: Path, output_format: str = "same") -> Path:
    """Where the enhanced version of ``rel`` goes: ``same`` keeps the name, ``png``/``jpg``
    replace the suffix (``.jpeg`` stays as it is for ``jpg``)."""
    if output_format == "same":
        return rel
    if output_format not in _SUFFIXES:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    suffixes = _SUFFIXES[output_format]
    return rel if rel.suffix.lower() in suffixes else rel.with_suffix(suffixes[0])


def output_collisions(files: Sequence[Path], root: Path, output_format: str) -> Dict[Path, List[Path]]:
    """Outputs that two or more inputs would write (``a.jpg`` and ``a.png`` with ``--format png``)."""
    targets: Dict[Path, List[Path]] = {}
    for f in files:
        targets.setdefault(output_name(f.relative_to(root), output_format), []).append(f)
    return {t: fs for t, fs in targets.items() if len(fs) > 1}


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
    output_format: str = "same",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    max_side: Optional[int] = None,
    resized: Optional[List[Tuple[str, Tuple[int, int], Tuple[int, int]]]] = None,
    record=None,
) -> Tuple[List[Dict[str, object]], List[Tuple[str, str]]]:
    """Enhance each image (any size) and save it under ``out_dir`` with its path relative to ``root``.

    Every failure is one file's (decoding, the enhancer or the quality model running out
    of memory, writing): it is listed in the failures and the other files are processed.
    A full disk, an exhausted quota or a read-only file system (:data:`STOP_ERRNOS`) while
    writing is not: the ``OSError`` is raised, naming the file, and the run stops (the
    record keeps what was complete, so the same command continues once there is room).

    Args:
        model: the enhancer, ``(1, 3, H, W)`` in [0, 1] -> same shape.
        files: image files under ``root``.
        root: the input folder (output names mirror it).
        out_dir: where enhanced images go.
        quality: scores attributes before and after (quality-aligned, 1 = desirable), or None.
        device: where to run.
        progress: show a tqdm bar on stderr.
        output_format: ``same`` (each input's own format), ``png`` or ``jpg`` (see :func:`output_name`).
        jpeg_quality: 1-100, for JPEG (and WebP) outputs.
        max_side: an image whose longer side exceeds this is downscaled (area filter)
            before it is enhanced, and written at that size; None: full size.
        resized: if a list is given, ``(path, (width, height) of the file, (width,
            height) enhanced)`` is appended for each image ``max_side`` downscaled.
        record: an :class:`enhancement.infer_record.InferRecord` of ``out_dir``, or None:
            each output is recorded as infer's before it is written, and as complete
            (with its row) once written and scored, so an interrupted run can resume.

    Outputs keep the input's bit depth where the output format holds it: a 16-bit PNG
    (or PPM, TIFF) input gives a 16-bit output (:func:`attiqa_loss.io.save_image`'s ``bits``).

    Returns:
        ``(rows, failures)``: one row per enhanced image (``path`` and ``output`` plus
        ``<attr>_before``/``<attr>_after``, empty for images under 32x32 or without
        ``quality``) and ``(path, reason)`` per image that could not be read or written.
        The ``after`` scores are those of the file as written, read back from disk (JPEG
        compression and the rounding to the file's bit depth included), so re-scoring
        ``out_dir`` gives them again.
    """
    from tqdm.auto import tqdm

    model = model.to(device).eval()
    rows: List[Dict[str, object]] = []
    failures: List[Tuple[str, str]] = []
    for path in tqdm(files, unit="img", disable=not progress, file=sys.stderr):
        rel = path.relative_to(root)
        try:
            stat = input_stat(path) if record is not None else None
            image, size, bits = read_image_with_info(path, max_side=max_side)
        except Exception as exc:  # one unreadable file must not stop the folder
            failures.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        if resized is not None and (image.shape[-1], image.shape[-2]) != tuple(size):
            resized.append((str(path), tuple(size), (image.shape[-1], image.shape[-2])))
        target = out_dir / output_name(rel, output_format)
        reason = None
        try:
            reason = "enhancing"
            x = image[None].to(device)
            out = model(x).float().clamp(0, 1)
            reason = "writing"
            output = str(target.relative_to(out_dir))
            if record is not None:
                record.start(output)
            save_image(out[0], target, quality=jpeg_quality, bits=bits)
            row: Dict[str, object] = {"path": str(rel), "output": output}
            if quality is not None and min(x.shape[-2:]) >= MIN_SIZE:
                reason = "reading back"
                written = read_image(target)[None].to(device)  # score what was saved, not the float output
                reason = "scoring"
                before, after = quality(x)[0].tolist(), quality(written)[0].tolist()
                for i, name in enumerate(ATTRIBUTES):
                    row[f"{name}_before"], row[f"{name}_after"] = f"{before[i]:.6f}", f"{after[i]:.6f}"
            if record is not None:
                reason = "recording"
                record.complete(str(rel), output, path, row, stat)
            reason = None
        except Exception as exc:  # memory errors too: this file fails, the others go on
            if reason in ("writing", "recording") and _disk_is_full(exc):  # every later file would fail too
                if exc.filename is None:
                    exc.filename = str(target)
                raise
            reason = _failure(reason, exc, target, tuple(image.shape))
        x = out = written = None
        if reason is not None:
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            failures.append((str(path), reason))
            continue
        rows.append(row)
    return rows, failures


#: Write errors that stop :func:`enhance_files` (the command exits with status 3, one line
#: naming the file) instead of failing one file: every later write would fail alike.
STOP_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS) if e is not None)


def _disk_is_full(exc: BaseException) -> bool:
    """A full disk, an exhausted quota or a read-only file system (:data:`STOP_ERRNOS`)."""
    return isinstance(exc, OSError) and exc.errno in STOP_ERRNOS


def _failure(stage: str, exc: BaseException, target: Path, shape) -> str:
    from attiqa_loss.scoring import _is_memory_error

    if isinstance(exc, OSError) and exc.strerror:  # the reason alone: the path is named by the message
        where = exc.filename if exc.filename not in (None, str(target)) else None
        first = f"{exc.strerror}" + (f" ({where})" if where is not None else "")
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
    if _is_memory_error(exc):
        return (f"out of memory {stage} a {shape[-1]}x{shape[-2]} image ({type(exc).__name__}: {first}); "
                "a smaller --max-side bounds the memory")
    if stage == "writing":
        return f"cannot write {target}: {first}"
    if stage == "reading back":
        return f"cannot read back {target}: {type(exc).__name__}: {first}"
    return f"{stage} failed: {type(exc).__name__}: {first}"


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


def scan_inputs(data: Path) -> ImageListing:
    """Images to enhance (every image under ``data``, a folder, or ``data`` itself) and
    what was skipped there and why (:func:`attiqa_loss.io.scan_images`)."""
    return scan_images([data])


def list_inputs(data: Path) -> List[Path]:
    """Images to enhance: every image under ``data`` (a folder), or ``data`` itself."""
    return scan_inputs(data).files
