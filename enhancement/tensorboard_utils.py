"""TensorBoard output of an enhancement run (docs/method.md, section 10).

Tags:

- ``attributes/<name>/{input,output,target}``: mean validation attribute scores; a
  custom-scalars layout draws the three of one attribute in ONE chart ("Multiline").
- ``loss/<term>`` and ``loss/total`` (training), ``train/lr``.
- ``val/psnr``, ``val/ssim``, ``val/lpips`` (output vs target) and ``val/*_input`` (input
  vs target, the do-nothing baseline).
- ``samples/<i>``: image strips input | output | target.
- ``config``: the resolved YAML config as text; hparams with the final metrics.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import torch

from attiqa_loss import ATTRIBUTES

__all__ = ["ROLES", "attribute_tag", "attribute_layout", "RunLogger"]

ROLES = ("input", "output", "target")
_ATTRIBUTE_NOTE = "quality-aligned score in [0, 1], 1 = desirable"


def attribute_tag(name: str, role: str) -> str:
    """``attributes/<name>/<role>`` with role one of :data:`ROLES`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    return f"attributes/{name}/{role}"


def attribute_layout(
    attributes: Sequence[str] = ATTRIBUTES, loss_terms: Iterable[str] = (), *, with_lpips: bool = False
) -> Dict[str, Dict[str, list]]:
    """The custom-scalars layout: one Multiline chart per attribute (input, output, target),
    one for the loss terms and one per validation metric (output and input baseline)."""
    layout: Dict[str, Dict[str, list]] = {
        "attributes (quality-aligned, 1 = desirable)": {
            f"{name} ({ATTRIBUTES.descriptions.get(name, '')})": [
                "Multiline",
                [attribute_tag(name, role) for role in ROLES],
            ]
            for name in attributes
        },
        "loss": {"terms": ["Multiline", [f"loss/{t}" for t in loss_terms] + ["loss/total"]]},
    }
    metrics = ["psnr", "ssim"] + (["lpips"] if with_lpips else [])
    layout["validation"] = {m.upper(): ["Multiline", [f"val/{m}", f"val/{m}_input"]] for m in metrics}
    return layout


class RunLogger:
    """A ``SummaryWriter`` wrapper that does nothing when ``enabled`` is false (ranks > 0).

    Args:
        logdir: event file folder.
        purge_step: on resume, the step to continue from; TensorBoard then hides events
            of the interrupted run logged after it.
        enabled: write anything at all.
    """

    def __init__(self, logdir: os.PathLike, *, purge_step: Optional[int] = None, enabled: bool = True) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalar(self, tag: str, value: float, step: int, description: Optional[str] = None) -> None:
        """A scalar, with an optional description shown in TensorBoard's tooltip."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import scalar

        summary = scalar(tag, float(value), new_style=True)
        if description:
            summary.value[0].metadata.summary_description = description
        self.writer._get_file_writer().add_summary(summary, step)

    def layout(self, layout: Mapping[str, Mapping[str, list]]) -> None:
        if self.writer is not None:
            self.writer.add_custom_scalars(dict(layout))

    def attribute_scores(self, scores: Mapping[str, Mapping[str, float]], step: int) -> None:
        """``scores[role][name]`` -> ``attributes/<name>/<role>`` with a descriptive tooltip."""
        for role, per_name in scores.items():
            for name, value in per_name.items():
                desc = (
                    f"{name} of the {role} images ({ATTRIBUTES.descriptions.get(name, '')}): "
                    f"{_ATTRIBUTE_NOTE}, higher is better"
                )
                self.scalar(attribute_tag(name, role), value, step, desc)

    def image_strip(self, tag: str, images: Sequence[torch.Tensor], step: int) -> None:
        """Images ``(3, H, W)`` in [0, 1] of one size side by side (input | output | target)."""
        if self.writer is None:
            return
        strip = torch.cat([im.detach().float().clamp(0, 1).cpu() for im in images], dim=-1)
        self.writer.add_image(tag, strip, step, dataformats="CHW")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """Record ``hparams`` (flat; lists/None become strings) with final ``metrics`` in this run."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        exp, ssi, sei = hparams_summary(flat, dict(metrics))
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary, step)
        for key, value in metrics.items():
            self.scalar(key, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
