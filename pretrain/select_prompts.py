"""``attiqa-pretrain select-prompts``: choose CLIP prompts on a degradation proxy task (ATTIQA stage 1).

For each attribute, pristine photos are degraded along that attribute at L graded
levels with every family of :mod:`pretrain.degradations` (level 0 = untouched). Each
candidate prompt (antonym pair x template, :mod:`pretrain.prompts`) scores the mean,
over images and families, of the per-image Spearman correlation between its CLIP
pseudo-label and ``-level`` (quality-aligned: the label should fall as the degradation
grows). The best ``top_k`` candidates per attribute form the selected ensemble.

Images are encoded once per degraded version (the untouched level once for all
attributes) and text features once per candidate. Since ``p = sigmoid(tau * (cos+ - cos-))``
is monotone in the cosine difference, the SRCC is computed on the difference itself:
the same ranking, without float saturation ties at large ``tau``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.io import atomic_write, list_images

from .clip_model import ClipSection, ClipTeacher, add_clip_arguments, apply_clip_arguments, create_clip_teacher, load_clip_image
from attiqa_train.config import add_config_arguments, config_from_args, config_to_dict, save_config
from .correlation import batched_srcc
from .degradations import degrade, graded_strengths, list_families
from attiqa_train.distributed import env_rank, resolve_device
from .prompts import Prompt, default_prompt_set, list_candidates, load_candidates, save_prompt_set

__all__ = ["DESCRIPTION", "SelectPromptsConfig", "add_arguments", "run", "pick_images", "score_prompts", "select_prompts"]

DESCRIPTION = """Score candidate antonym prompts on a degradation proxy task and keep the best (docs/method.md, section 3).

Each attribute's candidates (pairs x templates, pretrain/prompts.py or select.candidates)
are scored by the mean per-image SRCC between the CLIP pseudo-label and the degradation
level over L graded levels of every degradation family; higher is better (1 = the label
falls perfectly with the degradation). Writes --out/prompts.yaml (the chosen prompts,
input to `label --prompts`) and --out/proxy_scores.csv (every candidate, for auditing).

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


def _level_generator(seed: int, *parts: int) -> torch.Generator:
    value = int(seed)
    for p in parts:
        value = (value * 1_000_003 + int(p) + 1) % (2**61 - 1)
    return torch.Generator().manual_seed(value)


@torch.no_grad()
def _encode_degraded(
    teacher: ClipTeacher,
    images: torch.Tensor,
    attribute: str,
    pristine: torch.Tensor,
    levels: int,
    batch_size: int,
    seed: int,
    bar,
) -> Dict[str, torch.Tensor]:
    """``{family: (N, L, D)}`` features of every image at every level of every family."""
    strengths = graded_strengths(levels)
    a = ATTRIBUTES.index_of(attribute)
    out = {}
    for fi, fam in enumerate(list_families(attribute)):
        feats = torch.empty(images.shape[0], levels, pristine.shape[-1])
        feats[:, 0] = pristine
        for li in range(1, levels):
            for bi, start in enumerate(range(0, images.shape[0], batch_size)):
                chunk = images[start : start + batch_size]
                g = _level_generator(seed, a, fi, li, bi)
                x = degrade(chunk, attribute, fam.name, float(strengths[li]), g)
                feats[start : start + chunk.shape[0], li] = teacher.encode_images(x).cpu()
                bar.update(chunk.shape[0])
        out[fam.name] = feats
    return out


def score_prompts(
    features: Dict[str, torch.Tensor], pole_features: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """Per-image SRCC of every prompt ensemble on every family.

    Args:
        features: ``{family: (N, L, D)}`` unit image features by level (0 = untouched).
        pole_features: ``(C, 2, D)`` positive / negative text features of C ensembles.

    Returns:
        ``{family: (C, N)}`` SRCC between ``cos(f, t+) - cos(f, t-)`` and ``-level``.
    """
    out = {}
    for name, f in features.items():
        diff = torch.einsum("nld,cd->cnl", f, pole_features[:, 0].cpu()) - torch.einsum(
            "nld,cd->cnl", f, pole_features[:, 1].cpu()
        )
        levels = -torch.arange(f.shape[1], dtype=torch.float64)
        out[name] = batched_srcc(diff.double(), levels)
    return out


def _summaries(per_family: Dict[str, torch.Tensor]) -> List[Dict[str, Any]]:
    stacked = torch.stack(list(per_family.values()), dim=1)  # (C, F, N)
    flat = stacked.flatten(1)
    rows = []
    for c in range(stacked.shape[0]):
        rows.append(
            {
                "srcc": float(flat[c].mean()),
                "srcc_std": float(flat[c].std(unbiased=False)),
                "family_srcc": {name: float(v[c].mean()) for name, v in per_family.items()},
            }
        )
    return rows


def select_prompts(
    teacher: ClipTeacher,
    images: torch.Tensor,
    candidates: Dict[str, Sequence[Prompt]],
    *,
    levels: int = 6,
    batch_size: int = 32,
    seed: int = 0,
    top_k: int = 1,
    progress: bool = True,
) -> Dict[str, Any]:
    """Score every candidate and pick the top-k per attribute.

    Args:
        teacher: the CLIP model.
        images: ``(N, 3, H, W)`` pristine photos in [0, 1] at the teacher's image size.
        candidates: ``{attribute: [Prompt, ...]}`` for every attribute.
        levels, batch_size, seed, top_k: see :class:`ProxySection` / :class:`SelectSection`.

    Returns:
        ``{"selected": PromptSet, "selected_scores": {a: [srcc per prompt]},
        "ensemble_scores": {a: srcc}, "rows": [CSV rows]}``.
    """
    from tqdm import tqdm

    families = {a: list_families(a) for a in ATTRIBUTES}
    total = images.shape[0] * (1 + sum(len(f) for f in families.values()) * (levels - 1))
    bar = tqdm(total=total, unit="img", desc="select-prompts", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    pristine = torch.cat([teacher.encode_images(images[s : s + batch_size]).cpu() for s in range(0, images.shape[0], batch_size)])
    bar.update(images.shape[0])
    default = default_prompt_set()
    selected, selected_scores, ensemble_scores, rows = {}, {}, {}, []
    for attribute in ATTRIBUTES:
        cands = list(candidates[attribute])
        if not cands:
            raise ValueError(f"no candidate prompts for {attribute!r}")
        feats = _encode_degraded(teacher, images, attribute, pristine, levels, batch_size, seed, bar)
        cand_scores = _summaries(score_prompts(feats, teacher.prompt_features([[p] for p in cands])))
        order = sorted(range(len(cands)), key=lambda i: (-cand_scores[i]["srcc"], i))
        chosen = order[:top_k]
        selected[attribute] = tuple(cands[i] for i in chosen)
        selected_scores[attribute] = [cand_scores[i]["srcc"] for i in chosen]
        extra = _summaries(score_prompts(feats, teacher.prompt_features([selected[attribute], default[attribute]])))
        ensemble_scores[attribute] = extra[0]["srcc"]
        for rank, i in enumerate(order, start=1):
            rows.append(_row(attribute, "candidate", rank, [cands[i]], cand_scores[i], images.shape[0], i in chosen))
        rows.append(_row(attribute, f"selected_top{top_k}", "", selected[attribute], extra[0], images.shape[0], True))
        rows.append(_row(attribute, "library_default", "", default[attribute], extra[1], images.shape[0], False))
    bar.close()
    return {"selected": selected, "selected_scores": selected_scores, "ensemble_scores": ensemble_scores, "rows": rows}


def _row(attribute, kind, rank, prompts: Sequence[Prompt], score, n, selected) -> Dict[str, Any]:
    def join(values):
        values = list(dict.fromkeys(values))
        return values[0] if len(values) == 1 else " | ".join(values)

    return {
        "attribute": attribute,
        "kind": kind,
        "rank": rank,
        "positive": join(p.positive for p in prompts),
        "negative": join(p.negative for p in prompts),
        "template": join(p.template for p in prompts),
        "srcc": f"{score['srcc']:.6f}",
        "srcc_std": f"{score['srcc_std']:.6f}",
        "family_srcc": ";".join(f"{k}={v:.4f}" for k, v in score["family_srcc"].items()),
        "n_images": n,
        "selected": int(bool(selected)),
    }


CSV_COLUMNS = ("attribute", "kind", "rank", "positive", "negative", "template", "srcc", "srcc_std", "family_srcc", "n_images", "selected")


def write_scores_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--images", type=Path, help="folder of pristine photos (searched recursively); overrides data.images")
    add_clip_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(SelectPromptsConfig, args)
    apply_clip_arguments(cfg.clip, args)
    if args.images is not None:
        cfg.data.images = str(args.images)
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
    teacher = create_clip_teacher(
        cfg.clip.model, cfg.clip.pretrained, device=device, tau=cfg.clip.tau, init_seed=cfg.clip.init_seed
    )
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
