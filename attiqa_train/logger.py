"""A training run's TensorBoard output: one main run and named sub-runs, rank 0 only.

:class:`RunLogger` holds the ``SummaryWriter`` s of one folder (``OUT/tb``): the main run
and sub-runs in sub-folders (TensorBoard draws the same tag of several runs as
differently coloured lines in one chart). It writes nothing when ``enabled`` is false
(ranks > 0 of a ``torchrun`` job).

Resume: every writer starts its event file with a session START at ``purge_step`` (0 in a
fresh run, the saved state's step + 1 on resume); on a START, TensorBoard drops the events
of that run logged from its step on, so a resumed run hides what the interrupted one
logged after its last saved state, in every run folder. A fresh run writes its START too,
because TensorBoard's Python loader (``--load_fast=false``) ignores the first START of a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ["RunLogger"]


class RunLogger:
    """``SummaryWriter`` s of one TensorBoard folder (see the module docstring).

    Args:
        logdir: the run's TensorBoard folder (``OUT/tb``); sub-runs go in sub-folders.
        purge_step: on resume, the first step to log again (None or 0 for a fresh run).
        enabled: write anything at all.
        runs: sub-runs to create at once, in this order (``""`` = the main run, always
            created); TensorBoard colours runs in the order they started. Other
            sub-runs are created on first use.
    """

    def __init__(self, logdir: os.PathLike, *, purge_step: Optional[int] = None, enabled: bool = True,
                 runs: Sequence[str] = ("",)) -> None:
        self.logdir = Path(logdir)
        self.purge_step = 0 if purge_step is None else int(purge_step)
        self.enabled = enabled
        self._writers: Dict[str, Any] = {}
        if enabled:
            for run in list(runs) + ([""] if "" not in runs else []):
                self._writer(run)

    def _writer(self, run: str):
        if not self.enabled:
            return None
        if run not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[run] = SummaryWriter(str(self.logdir / run) if run else str(self.logdir),
                                               purge_step=self.purge_step)
        return self._writers[run]

    @property
    def writer(self):
        """The main run's ``SummaryWriter`` (None when disabled)."""
        return self._writers.get("")

    @property
    def runs(self) -> List[str]:
        """Runs with a writer, in creation order (``""`` is the main run)."""
        return list(self._writers)

    def scalar(self, tag: str, value: float, step: int, description: Optional[str] = None, *, run: str = "") -> None:
        """A scalar in ``run`` (a sub-folder; ``""`` = the main run), with an optional
        description shown in TensorBoard's tooltip (written as a tensor summary then;
        without one, as a classic scalar summary that every TensorBoard reader sees)."""
        writer = self._writer(run)
        if writer is None:
            return
        if not description:
            writer.add_scalar(tag, float(value), step)
            return
        from torch.utils.tensorboard.summary import scalar

        summary = scalar(tag, float(value), new_style=True)
        if description:
            summary.value[0].metadata.summary_description = description
        writer._get_file_writer().add_summary(summary, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A ``(3, H, W)`` image in [0, 1] in the main run."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="CHW")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """Text (markdown) in the main run."""
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
