"""MOS datasets: a ``path,mos`` CSV and the repeated train/test split protocol
(docs/method.md, section 7).

- :func:`read_mos_csv`: relative paths resolve against the CSV's folder, or a given root;
  every file is checked up front.
- :func:`random_splits`: ``splits`` random partitions with ``test_fraction`` held out.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["MosData", "read_mos_csv", "random_splits"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class MosData:
    """Image paths and their mean opinion scores, in CSV order."""

    paths: Tuple[Path, ...]
    mos: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Sequence[int]) -> "MosData":
        return MosData(tuple(self.paths[i] for i in index), self.mos[np.asarray(index, dtype=np.int64)], self.source)


def read_mos_csv(path: PathLike, *, root: Optional[PathLike] = None, check_files: bool = True) -> MosData:
    """Read a ``path,mos`` CSV (header required; other columns are ignored).

    Args:
        path: the CSV file.
        root: folder that relative image paths resolve against; default the CSV's folder.
        check_files: raise if listed images do not exist.

    Raises:
        FileNotFoundError: no CSV, or listed images missing (the first few are named).
        ValueError: no ``path``/``mos`` column, a MOS that is not a finite number (row
            named), fewer than 2 rows, or all MOS equal.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MOS CSV not found: {path}")
    base = Path(root) if root is not None else path.parent
    paths, scores = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "path" not in header or "mos" not in header:
            raise ValueError(f"{path} needs a header with columns 'path' and 'mos', got {header}")
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            raw = (row.get("mos") or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{path} line {line}: mos must be a number, got {raw!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{path} line {line}: mos must be finite, got {raw!r}")
            p = Path((row.get("path") or "").strip()).expanduser()
            if not str(p) or str(p) == ".":
                raise ValueError(f"{path} line {line}: empty path")
            paths.append(p if p.is_absolute() else base / p)
            scores.append(value)
    if len(paths) < 2:
        raise ValueError(f"{path} holds {len(paths)} row(s); a MOS dataset needs at least 2")
    mos = np.asarray(scores, dtype=np.float64)
    if np.ptp(mos) == 0:
        raise ValueError(f"{path}: every mos is {mos[0]}; correlations need varied scores")
    if check_files:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: {len(missing)} listed image(s) not found, e.g. {missing[:3]}")
    return MosData(tuple(paths), mos, path)


def random_splits(n: int, splits: int, test_fraction: float = 0.2, seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The standard protocol: ``splits`` random train/test partitions of ``n`` items.

    Split ``s`` is a permutation drawn from ``numpy.random.default_rng(seed + s)``, so the
    same ``(n, seed)`` gives the same splits in ``finetune`` and ``evaluate``.

    Returns:
        ``[(train_index, test_index), ...]``, sorted index arrays.
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(n * test_fraction))
    if n_test < 3 or n - n_test < 3:
        raise ValueError(
            f"{n} items give {n_test} test and {n - n_test} training items at test_fraction={test_fraction}; "
            "each side needs at least 3"
        )
    out = []
    for s in range(splits):
        perm = np.random.default_rng(seed + s).permutation(n)
        out.append((np.sort(perm[n_test:]), np.sort(perm[:n_test])))
    return out
