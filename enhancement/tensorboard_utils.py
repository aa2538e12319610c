"""TensorBoard output of an enhancement run (docs/method.md, section 10).

A run writes one TensorBoard *run* per role under ``OUT/tb``, so TensorBoard draws input,
output and reference of one quantity as differently coloured lines in one chart, with the
run names as the legend:

========================  ==================================================================
run (folder)              tags
========================  ==================================================================
``tb`` (shown as ``.``)   ``loss/<term>``, ``loss/total``, ``train/lr`` (training);
                          ``samples/<stem>``: image strips input | output | reference with a
                          labelled header band; ``config``: the resolved YAML as text
``tb/input``              ``attributes/<name>``, ``val/psnr``, ``val/ssim``, ``val/lpips``
                          of the unprocessed input (the do-nothing baseline)
``tb/output``             the same tags for the enhanced output, and the HParams session
                          (trimmed config, see :func:`hparams_of`; its metrics are the
                          output's final ``val/*`` and ``attributes/*`` values)
``tb/reference``          ``attributes/<name>`` of the clean reference images
========================  ==================================================================

No other run: every line in a chart is one of the roles (the charts keep TensorBoard's own
axis range). Attribute scores are quality-aligned in [0, 1], 1 = desirable; the tag
descriptions (tooltips) say so. ``attributes/<name>`` is also the tag of
``attiqa-score --logdir`` (:func:`attiqa_loss.score_output.attribute_tag`), so scoring and
training runs in one logdir share their charts. ``metrics.json`` keeps flat keys (``attributes/<name>/<role>``,
``val/psnr``, ``val/psnr_input``, ...).

Everything is written on rank 0 only; resume and purge rules are those of
:class:`attiqa_train.logger.RunLogger`, which :class:`EnhanceLogger` extends.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from attiqa_loss import ATTRIBUTES
from attiqa_loss.score_output import attribute_tag
from attiqa_train.logger import RunLogger

__all__ = [
    "ROLES",
    "VAL_METRICS",
    "attribute_tag",
    "labelled_strip",
    "stack_rows",
    "hparams_of",
    "HPARAMS_SHOWN",
    "EnhanceLogger",
]

#: The sub-runs holding validation numbers, one per image role.
ROLES = ("input", "output", "reference")
#: Full-reference metrics of :func:`enhancement.heldout.evaluate`: name -> description.
VAL_METRICS = {
    "psnr": "PSNR in dB against the reference, higher is better",
    "ssim": "SSIM against the reference in [0, 1], higher is better",
    "lpips": "LPIPS distance to the reference, lower is better",
}
#: The hparams TensorBoard's HParams table shows as columns by default (it shows five,
#: those marked ``differs`` first); the others are a tick away in its left pane.
HPARAMS_SHOWN = ("data.mode", "loss.fidelity_weight", "loss.attiqa_weight", "train.lr", "train.steps")
#: Discrete domains (a checkbox filter in the HParams pane instead of none for strings).
HPARAM_DOMAINS = {"data.mode": ["paired", "synthetic", "unpaired"]}
_CREATION_ORDER = ("output", "input", "reference", "")
_ATTRIBUTE_NOTE = "quality-aligned score in [0, 1], 1 = desirable"
_HEADER_BG = (24, 24, 24)
_HEADER_FG = (255, 255, 255)


def _role_metric(key: str) -> Tuple[str, str]:
    """``psnr`` -> (``output``, ``val/psnr``); ``psnr_input`` -> (``input``, ``val/psnr``)."""
    for role in ROLES:
        if key.endswith("_" + role):
            return role, "val/" + key[: -len(role) - 1]
    return "output", "val/" + key


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # FreeType build of Pillow: scalable
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def labelled_strip(images: Sequence[torch.Tensor], labels: Sequence[str] = ROLES) -> torch.Tensor:
    """Images ``(3, H, W)`` in [0, 1] of one size side by side, under a dark header band
    that names each panel (Pillow's default font, white on dark grey).

    Returns:
        ``(3, H + band, len(images) * W)`` uint8, ``band = header_height(W)``.
    """
    from PIL import Image, ImageDraw

    if not images:
        raise ValueError("labelled_strip needs at least one image")
    labels = list(labels)[: len(images)]
    strip = torch.cat([im.detach().float().clamp(0, 1).cpu() for im in images], dim=-1)
    pixels = (strip * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    height, panel = pixels.shape[0], images[0].shape[-1]
    band = header_height(panel)
    canvas = Image.new("RGB", (pixels.shape[1], height + band), _HEADER_BG)
    canvas.paste(Image.fromarray(np.ascontiguousarray(pixels)), (0, band))
    draw = ImageDraw.Draw(canvas)
    size = band * 3 // 4
    font = _font(size)
    while size > 6 and max(draw.textlength(t, font=font) for t in labels) > panel - 4:
        size -= 1
        font = _font(size)
    for i, text in enumerate(labels):
        if i:
            draw.line([(i * panel, 0), (i * panel, band - 1)], fill=(90, 90, 90))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = i * panel + (panel - (right - left)) / 2 - left
        y = (band - (bottom - top)) / 2 - top
        draw.text((x, y), text, fill=_HEADER_FG, font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def stack_rows(rows: Sequence[torch.Tensor], fill) -> torch.Tensor:
    """Strips ``(3, h_i, w_i)`` one under another, left-aligned; narrower rows are padded
    on the right with ``fill`` (a value of the rows' dtype). Returns ``(3, sum h_i, max w_i)``."""
    width = max(r.shape[-1] for r in rows)
    canvas = torch.full((3, sum(r.shape[-2] for r in rows), width), fill, dtype=rows[0].dtype)
    top = 0
    for r in rows:
        canvas[:, top : top + r.shape[-2], : r.shape[-1]] = r
        top += r.shape[-2]
    return canvas


def header_height(panel_width: int) -> int:
    """Height of the header band above panels ``panel_width`` pixels wide: a seventh of
    it, 16 to 96 pixels, so the labels stay legible when TensorBoard shrinks the strip
    to its card width."""
    return int(min(96, max(16, round(panel_width / 7))))


def hparams_of(cfg, weights: Mapping[str, float], targets: Mapping[str, float]) -> Dict[str, Any]:
    """The knobs shown in TensorBoard's HParams table (not the whole config).

    Args:
        cfg: an :class:`enhancement.config.EnhanceConfig`.
        weights, targets: the ``AttiqaLoss`` per-attribute weights and targets in effect
            (``loss.attiqa_weights`` / ``attiqa_targets`` with their defaults filled in).
    """
    loss, train = cfg.loss, cfg.train
    hp: Dict[str, Any] = {"data.mode": cfg.data.mode}
    for term in ("fidelity", "ssim", "lpips", "attiqa", "exposure", "tv"):
        hp[f"loss.{term}_weight"] = float(getattr(loss, f"{term}_weight"))
    for name, value in weights.items():
        hp[f"loss.attiqa_weights.{name}"] = round(float(value), 6)
    for name, value in targets.items():
        hp[f"loss.attiqa_targets.{name}"] = round(float(value), 6)
    hp.update({
        "loss.attiqa_views": int(loss.attiqa_views),
        "train.lr": float(train.lr),
        "train.steps": int(train.steps),
        "train.batch_size": int(train.batch_size),
        "data.crop_size": int(cfg.data.crop_size),
        "data.unpaired_batch": int(cfg.data.unpaired_batch),
        "model.width": int(cfg.model.width),
        "model.output": str(cfg.model.output),
        "model.gain_residual": float(cfg.model.gain_residual),
        "model.gain_residual_highpass": int(cfg.model.gain_residual_highpass),
        "train.seed": int(train.seed),
    })
    return hp


class EnhanceLogger(RunLogger):
    """:class:`~attiqa_train.logger.RunLogger` of an enhancement run, with the role sub-runs.

    The main run and the sub-runs of ``roles`` are created at once, in the order of
    :data:`_CREATION_ORDER`: TensorBoard's Time Series tab colours runs in the order they
    started, so output, input and reference keep their colours from run to run.

    Args:
        logdir, purge_step, enabled: as :class:`~attiqa_train.logger.RunLogger`.
        roles: the role sub-runs validation will write (``()`` without validation
            images; no ``reference`` without reference images).
    """

    def __init__(self, logdir: os.PathLike, *, purge_step: Optional[int] = None, enabled: bool = True,
                 roles: Sequence[str] = ROLES) -> None:
        wanted = set(roles) | {""}
        super().__init__(logdir, purge_step=purge_step, enabled=enabled,
                         runs=[run for run in _CREATION_ORDER if run in wanted])

    def attribute_scores(self, scores: Mapping[str, Mapping[str, float]], step: int) -> None:
        """``scores[role][name]`` -> ``attributes/<name>`` in run ``role``."""
        for role, per_name in scores.items():
            if role not in ROLES:
                raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
            for name, value in per_name.items():
                self.scalar(attribute_tag(name), value, step, _attribute_description(name), run=role)

    def validation_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """:func:`~enhancement.heldout.evaluate` metrics: ``psnr`` -> ``val/psnr`` in run
        ``output``, ``psnr_input`` -> ``val/psnr`` in run ``input``, ..."""
        for key, value in metrics.items():
            run, tag = _role_metric(key)
            base = tag.split("/", 1)[1]
            desc = f"{VAL_METRICS.get(base, base)}; runs: output (enhanced), input (unprocessed baseline)"
            self.scalar(tag, value, step, desc, run=run)

    def image_strip(self, tag: str, images: Sequence[torch.Tensor], step: int,
                    labels: Sequence[str] = ROLES) -> None:
        """:func:`labelled_strip` of ``images`` (input | output | reference) as image ``tag``."""
        if self.writer is not None:
            self.image(tag, labelled_strip(images, labels), step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, str], step: int,
                *, run: str = "output", shown: Sequence[str] = HPARAMS_SHOWN) -> None:
        """An HParams session in sub-run ``run``: ``hparams`` (flat; lists/None become
        strings) and, as its metrics, ``{display name: tag}`` of tags already logged in that
        run (no extra ``hparams/*`` scalars). TensorBoard shows five hparams and five
        metrics by default: the ``shown`` hparams (marked ``differs``, which it puts first)
        and the first five metrics in ``metrics`` order.

        The session lives in a sub-run, not the main run: the HParams plugin looks a
        metric up in ``<session run>/<group>``, and the main run of
        ``tensorboard --logdir OUT/tb`` is called ``.``, which that lookup misses.
        """
        writer = self._writer(run)
        if writer is None:
            return
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        domains = {k: v for k, v in HPARAM_DOMAINS.items() if k in flat and flat[k] in v}
        exp, ssi, sei = hparams_summary(flat, {}, hparam_domain_discrete=domains)
        data = plugin_data_pb2.HParamsPluginData.FromString(exp.value[0].metadata.plugin_data.content)
        for info in data.experiment.hparam_infos:
            info.differs = info.name in shown
        for display, tag in metrics.items():
            data.experiment.metric_infos.add(
                name=api_pb2.MetricName(group="", tag=tag),
                display_name=display,
                dataset_type=api_pb2.DATASET_VALIDATION,
            )
        exp.value[0].metadata.plugin_data.content = data.SerializeToString()
        fw = writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary, step)


def _attribute_description(name: str) -> str:
    return (
        f"{name} ({ATTRIBUTES.descriptions.get(name, '')}): mean over the validation images; "
        f"{_ATTRIBUTE_NOTE}, higher is better. Runs: input (degraded), output (enhanced), "
        "reference (clean image)"
    )
