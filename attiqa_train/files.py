"""Result files written atomically (a temp file renamed into place): a reader, or a run
killed half-way, never sees half a file. JSON (indented, one trailing newline) and CSV
(header + one row per dict)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from attiqa_loss.io import atomic_write

__all__ = ["write_json", "write_csv", "write_text", "sha256_file"]

PathLike = Union[str, os.PathLike]


def write_text(path: PathLike, text: str) -> None:
    """``text`` to ``path``, atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: PathLike, data: Any) -> None:
    """``data`` as indented JSON (values JSON cannot hold are written as ``str(value)``)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None, *,
              fmt: Optional[Callable[[Any], Any]] = None) -> None:
    """``rows`` as CSV with a header: ``columns`` in that order (default: every key, in
    the order first seen), keys outside them ignored, missing ones empty; ``fmt`` is
    applied to every value (e.g. to round floats)."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: fmt(v) for k, v in row.items()} if fmt is not None else row)
    write_text(path, buf.getvalue())


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks), to record which data a result came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
