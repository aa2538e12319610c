"""The scores of folders and their comparison: :class:`FolderScores` (one folder's images
and their ``(N, 5)`` scores, built from :func:`~attiqa_loss.scoring.score_files` output by
:func:`folder_scores_from_rows`), and :func:`compare_folders` / :class:`FolderComparison`
(folders against the first, images paired by their path relative to their folder,
:func:`_relative_name`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .attributes import ATTRIBUTES
from .network import AttiqaNet

PathLike = Union[str, os.PathLike]


def _relative_name(path: Path, root: Path) -> str:
    """``path`` relative to the folder ``root`` (POSIX separators); a file root gives its own name."""
    if root.is_dir():
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


@dataclass
class FolderScores:
    """The scores of every image under one folder (or of one file).

    Attributes:
        root: the folder (or file) that was scored.
        paths: the scored files, sorted as :func:`attiqa_loss.io.list_images` lists them.
        scores: ``(N, 5)`` float32 tensor on the CPU, row ``i`` for ``paths[i]``, columns in
            ``ATTRIBUTES`` order (sharpness, contrast, brightness, colorfulness, noisiness),
            each in [0, 1], 1 = the desirable pole.
        failures: ``(path, reason)`` for each file that could not be read or was smaller
            than 32x32 (not in ``paths``).
        net: the network that scored them (pass it on to score another folder without
            loading the model again).
    """

    root: Path
    paths: List[Path]
    scores: torch.Tensor
    failures: List[Tuple[str, str]] = field(default_factory=list)
    net: Optional[AttiqaNet] = field(default=None, repr=False, compare=False)

    @property
    def names(self) -> List[str]:
        """Each path relative to ``root`` (``a/b.png``): the key that pairs images of two folders."""
        return [_relative_name(p, self.root) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def means(self) -> Dict[str, float]:
        """Mean score per attribute over the folder (NaN when nothing was scored)."""
        if not len(self.paths):
            return {name: float("nan") for name in ATTRIBUTES}
        return dict(zip(ATTRIBUTES, self.scores.double().mean(0).tolist()))

    def as_dict(self) -> Dict[str, Dict[str, float]]:
        """``{name: {attribute: score}}`` with ``name`` as in :attr:`names`."""
        return {n: dict(zip(ATTRIBUTES, row)) for n, row in zip(self.names, self.scores.tolist())}


def folder_scores_from_rows(
    root: PathLike,
    rows: Sequence[Tuple[str, Sequence[float]]],
    failures: Sequence[Tuple[str, str]] = (),
    *,
    net: Optional[AttiqaNet] = None,
) -> FolderScores:
    """A :class:`FolderScores` from :func:`~attiqa_loss.scoring.score_files` output (rows in the order given)."""
    scores = torch.tensor([list(s) for _, s in rows], dtype=torch.float32).reshape(len(rows), len(ATTRIBUTES))
    return FolderScores(Path(root), [Path(p) for p, _ in rows], scores, list(failures), net)


@dataclass
class FolderComparison:
    """Several folders' scores against the first (the reference).

    Attributes:
        folders: the :class:`FolderScores`, reference first.
        paired_names: relative paths present in every folder, sorted: the images compared
            one to one (empty when the folders share no names).
    """

    folders: List[FolderScores]
    paired_names: List[str]

    @property
    def paired(self) -> bool:
        return bool(self.paired_names)

    def differences(self, index: int) -> Dict[str, Dict[str, float]]:
        """Per-image ``score(folder index) - score(reference)`` for each paired name:
        ``{name: {attribute: difference}}`` (empty when nothing is paired)."""
        ref, other = self.folders[0].as_dict(), self.folders[index].as_dict()
        return {n: {a: other[n][a] - ref[n][a] for a in ATTRIBUTES} for n in self.paired_names}

    def mean_difference(self, index: int) -> Dict[str, float]:
        """Per attribute, folder ``index`` minus the reference: the mean of the per-image
        differences over the paired names when there are any, else the difference of the
        folder means."""
        if self.paired:
            diffs = self.differences(index)
            return {a: sum(d[a] for d in diffs.values()) / len(diffs) for a in ATTRIBUTES}
        ref, other = self.folders[0].means(), self.folders[index].means()
        return {a: other[a] - ref[a] for a in ATTRIBUTES}

    def unmatched(self, index: int) -> List[str]:
        """Names in folder ``index`` that have no counterpart in every other folder."""
        paired = set(self.paired_names)
        return [n for n in self.folders[index].names if n not in paired]


def compare_folders(folders: Sequence[FolderScores]) -> FolderComparison:
    """Compare folders with the first: images are paired by their path relative to their
    folder (``a/b.png`` in one folder with ``a/b.png`` in each other), see
    :class:`FolderComparison`."""
    folders = list(folders)
    if not folders:
        raise ValueError("compare_folders needs at least one FolderScores")
    common = set(folders[0].names)
    for f in folders[1:]:
        common &= set(f.names)
    return FolderComparison(folders, sorted(common))
