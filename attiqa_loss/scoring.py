"""Scoring image files and folders from Python (what ``attiqa-score`` runs).

    >>> from attiqa_loss import score_folder, compare_folders
    >>> before = score_folder("photos/before")          # the embedded default model
    >>> after = score_folder("photos/after", net=before.net)
    >>> before.means()                                   # {"sharpness": 0.61, ...}
    >>> compare_folders([before, after]).mean_difference(1)

Scores are in [0, 1] and quality-aligned (1 = sharp, high contrast, well lit,
colourful, noise-free), one column per attribute in ``ATTRIBUTES`` order. This module
runs the network (:func:`score_files`, :func:`score_folder`); the results,
:class:`FolderScores` and :class:`FolderComparison`, are defined in
:mod:`attiqa_loss.folder_scores` and importable from here.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .folder_scores import (  # noqa: F401  (_relative_name: importable from here, as before)
    FolderComparison,
    FolderScores,
    PathLike,
    _relative_name,
    compare_folders,
    folder_scores_from_rows,
)
from .io import ImageFiles, scan_images
from .network import AttiqaNet
from .checks import MIN_SIZE

__all__ = ["score_files", "score_folder", "NothingScoredError", "FolderScores", "FolderComparison", "compare_folders", "MAX_BATCH_PIXELS",
           "failure_reason", "non_finite_reason"]


#: Pixels one forward pass may hold (images of equal size share a pass up to this many):
#: about 2.6 GB of activations for the default network on the CPU, so that a batch of
#: large photos is scored one by one instead of all at once.
MAX_BATCH_PIXELS = 12_000_000


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text or "failed to allocate" in text)


def _free_device_memory(device: Union[str, torch.device]) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def failure_reason(exc: BaseException, shape: Optional[Sequence[int]] = None) -> str:
    """One line for a file that failed while it was being processed (not decoded):
    memory errors say the image size and point at ``--max-side``."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if _is_memory_error(exc):
        size = f" a {shape[-1]}x{shape[-2]} image" if shape is not None else ""
        return f"out of memory scoring{size} ({type(exc).__name__}: {first}); a smaller --max-side bounds the memory"
    return f"{type(exc).__name__}: {first}"


def non_finite_reason(row: Sequence[float], names: Sequence[str]) -> str:
    """The failure reason of a file whose scores are not all finite."""
    values = ", ".join(f"{n}={v:g}" for n, v in zip(names, row))
    return f"the network gave non-finite scores ({values})"


def score_files(
    net: AttiqaNet,
    files: Sequence[PathLike],
    *,
    batch_size: int = 8,
    device: Union[str, torch.device] = "cpu",
    num_workers: int = 0,
    max_side: Optional[int] = None,
    progress: bool = True,
    resized: Optional[List[Tuple[str, Tuple[int, int], Tuple[int, int]]]] = None,
) -> Tuple[List[Tuple[str, List[float]]], List[Tuple[str, str]]]:
    """Score image files; images of equal size are batched together.

    Every failure is one file's: a file that cannot be decoded, is smaller than 32x32,
    whose forward pass fails (an out-of-memory error included) or whose scores are not all
    finite (NaN, infinity) is listed in the failures and the rest are scored. A batch that fails is retried image by image. Images of
    equal size share a forward pass only up to :data:`MAX_BATCH_PIXELS` pixels.

    Args:
        net: the quality network (moved to ``device`` and put in eval mode).
        files: image paths, any size of at least 32x32.
        batch_size: images decoded per step; those of equal size share a forward pass.
        device: where the network runs.
        num_workers: DataLoader decoding processes (0: in this process).
        max_side: downscale images whose longer side exceeds this before scoring.
        progress: a tqdm bar on stderr.
        resized: if a list is given, ``(path, (width, height) of the file, (width,
            height) scored)`` is appended for each image that ``max_side`` downscaled.

    Returns:
        ``(scores, failures)``: ``scores`` is a list of ``(path, [s_1..s_5])`` in input
        order (failed files omitted), ``failures`` a list of ``(path, reason)``.
    """
    from tqdm.auto import tqdm

    files = [Path(f) for f in files]
    loader = torch.utils.data.DataLoader(
        ImageFiles(files, max_side=max_side, report_size=True),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=ImageFiles.collate,
    )
    results: Dict[str, List[float]] = {}
    failures: List[Tuple[str, str]] = []
    net = net.to(device).eval()

    def forward(items) -> None:
        reason = None
        try:
            out = net(torch.stack([im for im, _ in items]).to(device).clamp_(0, 1)).float().cpu().tolist()
        except Exception as exc:  # memory errors too: retried one by one, then that file fails alone
            reason = failure_reason(exc, tuple(items[0][0].shape))
        if reason is None:
            for (_, path), row in zip(items, out):
                if all(math.isfinite(v) for v in row):
                    results[path] = row
                else:  # a NaN score is this file's failure, never a result (nor a NaN mean)
                    failures.append((path, non_finite_reason(row, net.attributes)))
            return
        _free_device_memory(device)  # (outside the except block: the failed pass is released)
        if len(items) > 1:
            for item in items:
                forward([item])
        else:
            failures.append((items[0][1], reason))

    with torch.inference_mode(), tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr) as bar:
        for chunk in loader:
            groups = defaultdict(list)
            for image, path, error, size in chunk:
                if image is None:
                    failures.append((path, error))
                    continue
                if resized is not None and (image.shape[-1], image.shape[-2]) != tuple(size):
                    resized.append((path, tuple(size), (image.shape[-1], image.shape[-2])))
                if min(image.shape[-2:]) < MIN_SIZE:
                    failures.append(
                        (path, f"image is {image.shape[-1]}x{image.shape[-2]}, smaller than {MIN_SIZE}x{MIN_SIZE}")
                    )
                else:
                    groups[tuple(image.shape)].append((image, path))
            for shape, items in groups.items():
                per_pass = max(1, MAX_BATCH_PIXELS // (shape[-1] * shape[-2]))
                for i in range(0, len(items), per_pass):
                    forward(items[i : i + per_pass])
            bar.update(len(chunk))
    ordered = [(str(f), results[str(f)]) for f in files if str(f) in results]
    return ordered, failures


def score_folder(
    folder: PathLike,
    *,
    net: Optional[AttiqaNet] = None,
    checkpoint: Optional[PathLike] = None,
    batch_size: int = 8,
    device: Union[None, str, torch.device] = None,
    num_workers: int = 0,
    max_side: Optional[int] = None,
    progress: bool = False,
) -> FolderScores:
    """Score every image under ``folder`` (searched recursively), or one image file.

    Args:
        folder: a folder of images (:data:`attiqa_loss.io.IMAGE_EXTENSIONS`: ``.png .jpg .jpeg
            .bmp .tif .tiff .webp .ppm .pgm .pnm .gif``) or one file.
        net: the quality network; default: ``load_attiqa(checkpoint)``.
        checkpoint: a ``.safetensors`` model used when ``net`` is None (None: the model
            embedded in the package).
        batch_size: images decoded per step; images of equal size share a forward pass.
        device: where to run (default: ``"cuda"`` when available, else ``"cpu"``).
        num_workers: DataLoader decoding processes (0: in this process).
        max_side: downscale images whose longer side exceeds this before scoring
            (at least 32; None: full size).
        progress: show a tqdm bar on stderr.

    Returns:
        A :class:`FolderScores`: ``scores`` is an ``(N, 5)`` float32 CPU tensor for the
        ``N`` readable images (``paths``, ``names``), ``failures`` lists the others with
        the reason, ``means()`` gives the per-attribute means.

    Raises:
        FileNotFoundError: ``folder`` does not exist, or no model is available.
        ValueError: ``folder`` holds no image file (an empty folder has no mean to give:
            the message names the folder and what was skipped there), or a bad
            ``device``, ``batch_size``, ``max_side`` or ``num_workers``.
        NothingScoredError: (a ``ValueError``) ``folder`` holds images but none of them
            could be scored (all unreadable, too small or with non-finite scores): its
            ``failures`` lists them with the reason, as :attr:`FolderScores.failures`
            would. Some failures among scored images are not an error: they are in the
            result's ``failures``.
    """
    from .loss import load_attiqa
    from .checks import check_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_side is not None and max_side < MIN_SIZE:
        raise ValueError(f"max_side must be >= {MIN_SIZE} (the network's smallest input), got {max_side}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    device = check_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    root = Path(folder)
    listing = scan_images([root])
    files = listing.files
    if not files:
        skipped = f" ({listing.summary()})" if listing.skipped else ""
        raise ValueError(f"no image files found in {root}{skipped}")
    if net is None:
        net = load_attiqa(checkpoint)
    rows, failures = score_files(
        net, files, batch_size=batch_size, device=device, num_workers=num_workers, max_side=max_side,
        progress=progress,
    )
    if not rows:  # means of nothing would be NaN: no result to return
        raise NothingScoredError(root, failures)
    return folder_scores_from_rows(root, rows, failures, net=net)


class NothingScoredError(ValueError):
    """:func:`score_folder` found images in ``folder`` but could score none of them.

    Attributes:
        folder: the folder (or file) given.
        failures: ``(path, reason)`` for each image, as :attr:`FolderScores.failures`.
    """

    def __init__(self, folder: PathLike, failures: Sequence[Tuple[str, str]]) -> None:
        self.folder = Path(folder)
        self.failures = list(failures)
        first = ""
        if self.failures:
            path, reason = self.failures[0]
            first = f", e.g. {path}: {(str(reason).strip().splitlines() or [''])[0]}"
        super().__init__(f"no image in {self.folder} could be scored: {len(self.failures)} failure(s){first} "
                         "(the exception's .failures lists them all)")
