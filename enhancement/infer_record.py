"""The record ``attiqa-enhance infer`` keeps in its ``--out`` (:data:`RECORD_NAME`): which
outputs it wrote, with which settings, and whether the run finished. It makes an
interrupted run resumable and lets ``--overwrite`` replace only files infer wrote.

The record is a JSON-lines file, only ever appended to, each line flushed to disk
(``fsync``) before the work it announces goes on:

- ``{"event": "begin", "settings": {...}}``: a run starts (a fresh one, or ``--overwrite``);
- ``{"event": "resume"}``: an interrupted run is continued;
- ``{"event": "start", "output": "sub/b.png"}``: written before that output (or
  ``scores.csv``) is written, so every file infer writes is recorded as its own, even when
  the process dies during the write;
- ``{"event": "done", "path": ..., "output": ..., "input": {"size", "mtime_ns"},
  "bytes": ..., "row": {...}}``: the output is complete (written atomically) and ``row``
  is its line of ``scores.csv``;
- ``{"event": "finished", "images": N}``: ``scores.csv`` covers every image and none failed.

A process killed while appending leaves at most one incomplete last line; it is ignored
(and the next append starts on a new line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set

__all__ = ["RECORD_NAME", "InferRecord", "input_stat"]

#: The record's file name inside ``--out``.
RECORD_NAME = "attiqa-infer.jsonl"


def input_stat(path: Path) -> Dict[str, int]:
    """What identifies an input's content cheaply: its size and modification time."""
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class InferRecord:
    """The record of the infer runs in folder ``out`` (see the module docstring).

    After :meth:`read`: :attr:`exists`; :attr:`owned` (every output name any infer run
    started writing there, relative to ``out``); :attr:`settings` (of the latest run, or
    None); :attr:`finished` (the latest run ended with every image written); :attr:`done`
    (``path -> done entry`` of the latest run, the last entry per input)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / RECORD_NAME
        self.exists = False
        self.owned: Set[str] = set()
        self.settings: Optional[Dict[str, Any]] = None
        self.finished = False
        self.done: Dict[str, Dict[str, Any]] = {}
        self._file = None

    @classmethod
    def read(cls, out: Path) -> "InferRecord":
        record = cls(out)
        try:
            text = record.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return record
        record.exists = True
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # the torn last line of a killed process
                continue
            if isinstance(entry, dict):
                record._apply(entry)
        return record

    def _apply(self, entry: Mapping[str, Any]) -> None:
        event = entry.get("event")
        if event == "begin":
            self.settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else None
            self.finished, self.done = False, {}
        elif event == "resume":
            self.finished = False
        elif event == "start" and isinstance(entry.get("output"), str):
            self.owned.add(entry["output"])
        elif event == "done" and isinstance(entry.get("path"), str) and isinstance(entry.get("row"), dict):
            self.done[entry["path"]] = dict(entry)
        elif event == "finished":
            self.finished = True

    def completed(self, rel: str, source: Path) -> Optional[Dict[str, object]]:
        """The ``scores.csv`` row of input ``rel`` (relative to the input folder) when the
        latest run wrote its output completely and neither the input (``source``, its size
        and modification time) nor the output (its size) changed since; else None."""
        entry = self.done.get(rel)
        if entry is None or not isinstance(entry.get("output"), str):
            return None
        try:
            if entry.get("input") != input_stat(source):
                return None
            if (self.out / entry["output"]).stat().st_size != entry.get("bytes"):
                return None
        except OSError:
            return None
        return dict(entry["row"])

    # ------------------------------------------------------------------ writing

    def _append(self, entry: Mapping[str, Any]) -> None:
        if self._file is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+b")
            self._file.seek(0, os.SEEK_END)
            if self._file.tell() > 0:  # after a torn last line, start on a new one
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        self._file.write(json.dumps(entry, separators=(",", ":")).encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.exists = True
        self._apply(entry)

    def begin(self, settings: Mapping[str, Any]) -> None:
        self._append({"event": "begin", "settings": dict(settings)})

    def resume(self) -> None:
        self._append({"event": "resume"})

    def start(self, output: str) -> None:
        """Call before writing ``output`` (relative to ``out``)."""
        self._append({"event": "start", "output": str(output)})

    def complete(self, rel: str, output: str, source: Path, row: Mapping[str, object],
                 stat: Optional[Dict[str, int]] = None) -> None:
        """Call once ``output`` is written (atomically) and scored: ``row`` is its line of
        ``scores.csv``; ``stat``: :func:`input_stat` of ``source`` taken before it was read."""
        self._append({"event": "done", "path": str(rel), "output": str(output),
                      "input": stat if stat is not None else input_stat(source),
                      "bytes": (self.out / output).stat().st_size, "row": dict(row)})

    def finish(self, images: int) -> None:
        self._append({"event": "finished", "images": int(images)})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def changed_settings(self, settings: Mapping[str, Any]) -> List[str]:
        """The keys whose value differs between the latest run's settings and ``settings``."""
        before = self.settings or {}
        return sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
