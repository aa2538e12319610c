"""``attiqa-pretrain select-prompts``: choose CLIP prompts on a degradation proxy task (ATTIQA stage 1).

The command: its config (:class:`SelectPromptsConfig`), options and :func:`run`, which
picks the photos (:func:`pick_images`), decodes them at the CLIP teacher's size, runs
the proxy task and writes the chosen prompts (``prompts.yaml``), every candidate's
score (``proxy_scores.csv``) and the config. The proxy task itself (each candidate
prompt scored by the per-image rank correlation of its pseudo-label with the
degradation level) is in :mod:`pretrain.clip.prompt_proxy`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.io import list_images
from attiqa_train.config import add_config_arguments, config_from_args, config_to_dict, save_config
from attiqa_train.distributed import env_rank, resolve_device

from ..degrade.families import list_families
from .model import ClipSection, add_clip_arguments, clip_argument_values, create_clip_teacher
from .prompt_proxy import select_prompts, write_scores_csv
from .prompts import list_candidates, load_candidates, save_prompt_set
from .teacher import load_clip_image

__all__ = ["DESCRIPTION", "SelectPromptsConfig", "add_arguments", "run", "pick_images"]

DESCRIPTION = """Score candidate antonym prompts on a degradation proxy task and keep the best
(docs/method.md, section 3, in the source repository).

Each attribute's candidates (pairs x templates, pretrain/clip/prompts.py or
select.candidates) are scored by the mean per-image SRCC between the CLIP pseudo-label
and the degradation level over L graded levels of every degradation family; higher is
better (1 = the label falls perfectly with the degradation). Writes --out/prompts.yaml
(the chosen prompts, input to `label --prompts`) and --out/proxy_scores.csv (every
candidate, for auditing).

Random CLIP weights (--clip-pretrained none) give meaningless scores: use them only to
try the pipeline.

Example:
  attiqa-pretrain select-prompts --images photos/ --out runs/prompts \\
      --clip-model RN50 --clip-pretrained openai"""


@dataclass
class SelectData:
    """Pristine photos to degrade (folder, searched recursively)."""

    images: Optional[str] = None
    jpeg_draft: bool = True


@dataclass
class ProxySection:
    """The proxy task.

    Attributes:
        max_images: at most this many photos, evenly spaced over the sorted file list.
        levels: graded levels L including the untouched one (>= 3).
        batch_size: images per encoder call.
        seed: seed of the random parts of degradations (noise, blur direction).
    """

    max_images: int = 64
    levels: int = 6
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_images < 2:
            raise ValueError(f"max_images must be >= 2, got {self.max_images}")
        if self.levels < 3:
            raise ValueError(f"levels must be >= 3 for a rank correlation, got {self.levels}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class SelectSection:
    """Selection.

    Attributes:
        top_k: prompts ensembled per attribute (1 = the single best candidate).
        candidates: YAML with ``templates`` and/or ``pairs`` replacing the built-in lists.
    """

    top_k: int = 1
    candidates: Optional[str] = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class SelectPromptsConfig:
    clip: ClipSection = field(default_factory=ClipSection)
    data: SelectData = field(default_factory=SelectData)
    proxy: ProxySection = field(default_factory=ProxySection)
    select: SelectSection = field(default_factory=SelectSection)
    device: str = "auto"


def pick_images(folder: str, max_images: int) -> List[Path]:
    """Up to ``max_images`` files evenly spaced over the sorted images of ``folder``."""
    files = list_images([folder])
    if len(files) <= max_images:
        return files
    return [files[(i * len(files)) // max_images] for i in range(max_images)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", type=Path, help="folder of pristine photos (searched recursively); overrides data.images")
    add_clip_arguments(parser)


def run(args: argparse.Namespace) -> int:
    values = {"data.images": str(args.images)} if args.images is not None else {}
    cfg = config_from_args(SelectPromptsConfig, args, values={**clip_argument_values(args), **values})
    if env_rank() != 0:
        return 0  # a small job: under torchrun rank 0 does it alone
    if not cfg.data.images:
        raise SystemExit("error: give --images DIR (or data.images in the config): pristine photos to degrade")
    if not Path(cfg.data.images).is_dir():
        raise SystemExit(f"error: --images must be a folder, got {cfg.data.images}")
    files = pick_images(cfg.data.images, cfg.proxy.max_images)
    if len(files) < 2:
        raise SystemExit(f"error: need at least 2 images in {cfg.data.images}, found {len(files)}")
    candidates = load_candidates(cfg.select.candidates) if cfg.select.candidates else {a: list_candidates(a) for a in ATTRIBUTES}
    try:
        device = resolve_device(cfg.device)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        teacher = create_clip_teacher(
            cfg.clip.model, cfg.clip.pretrained, device=device, tau=cfg.clip.tau, init_seed=cfg.clip.init_seed
        )
    except (ValueError, FileNotFoundError) as exc:  # an unknown model or tag, an unreadable weight file
        raise SystemExit(f"error: {exc}") from None
    decoded = []
    for f in files:
        try:
            decoded.append(load_clip_image(f, teacher.image_size, teacher.resize_mode, draft=cfg.data.jpeg_draft))
        except Exception as exc:  # one bad file should not stop the selection
            print(f"warning: skipping unreadable {f}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if len(decoded) < 2:
        raise SystemExit(f"error: need at least 2 readable images in {cfg.data.images}, got {len(decoded)}")
    images = torch.stack(decoded).float().div_(255)
    result = select_prompts(
        teacher, images, candidates, levels=cfg.proxy.levels, batch_size=cfg.proxy.batch_size,
        seed=cfg.proxy.seed, top_k=cfg.select.top_k,
    )
    out = Path(args.out)
    selection = {
        "clip_model": teacher.name,
        "clip_pretrained": teacher.pretrained,
        "images": str(cfg.data.images),
        "n_images": int(images.shape[0]),
        "levels": cfg.proxy.levels,
        "families": {a: [f.name for f in list_families(a)] for a in ATTRIBUTES},
        "top_k": cfg.select.top_k,
        "score": "mean per-image SRCC of the pseudo-label with -level (higher is better)",
        "config": config_to_dict(cfg),
    }
    if teacher.pretrained == "none":
        selection["warning"] = "random CLIP weights: these scores say nothing about prompt quality"
    write_scores_csv(out / "proxy_scores.csv", result["rows"])
    save_prompt_set(
        out / "prompts.yaml", result["selected"], scores=result["selected_scores"],
        ensemble_scores=result["ensemble_scores"], selection=selection,
    )
    save_config(cfg, out / "config.yaml")
    defaults = {r["attribute"]: r["srcc"] for r in result["rows"] if r["kind"] == "library_default"}
    print(f"{'attribute':<13} {'proxy SRCC':>10} {'default':>8}  selected prompt(s)")
    for a in ATTRIBUTES:
        first = result["selected"][a][0]
        more = f" (+{len(result['selected'][a]) - 1})" if len(result["selected"][a]) > 1 else ""
        print(f"{a:<13} {result['ensemble_scores'][a]:>10.4f} {float(defaults[a]):>8.4f}  "
              f"{first.texts()[0]!r} / {first.texts()[1]!r}{more}")
    if teacher.pretrained == "none":
        print("note: random CLIP weights (--clip-pretrained none): the scores above are not a quality result")
    print(f"wrote {out / 'prompts.yaml'} and {out / 'proxy_scores.csv'}")
    return 0
