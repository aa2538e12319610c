"""The proxy task of ``attiqa-pretrain select-prompts``: degrade, encode, correlate, rank.

For each attribute, pristine photos are degraded along that attribute at L graded
levels with every family of :mod:`pretrain.degrade.families` (level 0 = untouched). Each
candidate prompt (antonym pair x template, :mod:`pretrain.clip.prompts`) scores the mean,
over images and families, of the per-image Spearman correlation between its CLIP
pseudo-label and ``-level`` (quality-aligned: the label should fall as the degradation
grows). The best ``top_k`` candidates per attribute form the selected ensemble
(:func:`select_prompts`); :func:`write_scores_csv` writes every candidate's row.

Images are encoded once per degraded version (the untouched level once for all
attributes) and text features once per candidate. Since ``p = sigmoid(tau * (cos+ - cos-))``
is monotone in the cosine difference, the SRCC is computed on the difference itself
(:func:`score_prompts`): the same ranking, without float saturation ties at large ``tau``.
The random parts of the degradations come from a generator seeded per (attribute,
family, level, batch), so a selection is reproducible.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.io import atomic_write

from ..degrade.families import degrade, graded_strengths, list_families
from ..metrics.correlation import batched_srcc
from .prompts import Prompt, default_prompt_set
from .teacher import ClipTeacher

__all__ = ["CSV_COLUMNS", "score_prompts", "select_prompts", "write_scores_csv"]


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
