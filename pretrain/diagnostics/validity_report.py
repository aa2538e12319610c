"""``attiqa-pretrain validity``: does each attribute score follow its own degradation?

On held-out photos, for the learned model and for simple handcrafted measures
(:mod:`pretrain.diagnostics.handcrafted`), it reports:

1. per attribute and degradation family, trained and never seen, the mean per-image
   SRCC between the attribute's score and the quality-aligned level;
2. specificity: how far one degradation moves the other four scores (shift from the
   lowest to the highest level, beside the on-target shift);
3. mixed cases: one attribute varied on top of a fixed degradation of another; the
   varied attribute must follow its level (SRCC) and the fixed one barely move
   (|cross-SRCC| and shift);
4. JPEG at falling quality (never seen in training): the mean attribute score must fall.

Writes ``OUT/validity.csv`` (every row) and ``OUT/validity.md`` (the README tables), and
prints the ship rule's validity lines (``attiqa-pretrain verdict`` gives the final verdict).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from attiqa_loss import ATTRIBUTES, load_attiqa, read_checkpoint_metadata
from attiqa_loss.checks import MIN_SIZE
from attiqa_loss.io import atomic_write, list_images, read_image
from attiqa_loss.loss import default_checkpoint_path
from attiqa_train.files import write_csv
from attiqa_train.sampling import split_every_nth

from ..degrade.families import list_families
from ..synthetic.graded import family_srcc
from ..synthetic.teacher import resolve_families
from .handcrafted import handcrafted_scores
from .ship_rule import validity_verdicts

DESCRIPTION = __doc__

#: (label, fixed degradations, varied attribute, varied family)
MIXED_CASES = [
    ("noise on a darkened photo", [("brightness", "exposure", 0.6)], "noisiness", "gaussian"),
    ("darkening a noisy photo", [("noisiness", "gaussian", 0.4)], "brightness", "exposure"),
    ("blur on a noisy photo", [("noisiness", "gaussian", 0.4)], "sharpness", "gaussian"),
    ("noise on a blurred photo", [("sharpness", "gaussian", 0.5)], "noisiness", "gaussian"),
    ("desaturation with lowered contrast", [("contrast", "linear", 0.5)], "colorfulness", "desaturate"),
    ("contrast loss on a desaturated photo", [("colorfulness", "desaturate", 0.6)], "contrast", "linear"),
]


def _mean(t: torch.Tensor) -> float:
    return float(t.float().nanmean())


def trained_families(metadata: dict) -> Dict[str, List[str]]:
    """The synthetic families a checkpoint was trained on, from its metadata: the
    recorded ``synthetic.families`` over the defaults, nothing if the synthetic teacher
    was off, the defaults when the metadata does not say (older checkpoints)."""
    training = metadata.get("training", {})
    teachers = training.get("teachers")
    if teachers is not None and "synthetic" not in teachers:
        return {a: [] for a in ATTRIBUTES}
    recorded = training.get("config", {}).get("synthetic", {}).get("families") or {}
    return resolve_families(recorded)


def build_report(
    scorers: Dict[str, callable],
    images: List[torch.Tensor],
    levels: int,
    trained: Optional[Dict[str, List[str]]] = None,
) -> List[dict]:
    """Every measurement as a row dict (``section``, ``case``, ``scorer``, metrics...).

    ``trained``: the families the model learnt from (default :func:`resolve_families`);
    the others are marked "(unseen)"."""
    from tqdm.auto import tqdm

    trained = trained if trained is not None else resolve_families()
    rows = []
    jobs = [("family", f.attribute, f.name, None,
             f"{f.attribute}/{f.name}" + ("" if f.name in trained.get(f.attribute, []) else " (unseen)"))
            for f in list_families()]
    jobs += [("mixed", attr, fam, base, label) for label, base, attr, fam in MIXED_CASES]
    for section, attr, fam, base, case in tqdm(jobs, desc="validity", file=sys.stderr):
        a = ATTRIBUTES.index(attr)
        fixed = [ATTRIBUTES.index(b[0]) for b in (base or [])]
        for name, scorer in scorers.items():
            r = family_srcc(scorer, images, attr, fam, levels, base=base)
            srcc, shift = r["srcc"], r["shift"]
            off = [i for i in range(len(ATTRIBUTES)) if i != a]
            row = {
                "section": section,
                "case": case,
                "scorer": name,
                "attribute": attr,
                "family": fam,
                "srcc": _mean(srcc[:, a]),
                "on_shift": _mean(shift[:, a]),
                "max_off_abs_shift": max(_mean(shift[:, i].abs()) for i in off),
                "max_off_abs_srcc": max(abs(_mean(srcc[:, i])) for i in off),
            }
            if fixed:
                row["fixed_abs_srcc"] = abs(_mean(srcc[:, fixed[0]]))
                row["fixed_abs_shift"] = _mean(shift[:, fixed[0]].abs())
            rows.append(row)
    # JPEG: the mean of the five scores against quality (quality-aligned level).
    for name, scorer in scorers.items():
        r = family_srcc(lambda x, s=scorer: s(x).mean(dim=1, keepdim=True).expand(-1, len(ATTRIBUTES)),
                        images, "sharpness", "jpeg", levels)
        rows.append({"section": "jpeg", "case": "JPEG quality 95 -> 10, mean of 5 scores", "scorer": name,
                     "attribute": "mean", "family": "jpeg", "srcc": _mean(r["srcc"][:, 0]),
                     "on_shift": _mean(r["shift"][:, 0]),
                     "unseen": "jpeg" not in trained.get("sharpness", [])})
    return rows


def _markdown(rows: List[dict]) -> str:
    def get(section, case, scorer):
        return next(r for r in rows if r["section"] == section and r["case"] == case and r["scorer"] == scorer)

    lines = ["| attribute / family | SRCC attiqa | SRCC handcrafted | on-target shift | max off-target shift |",
             "|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in rows if r["section"] == "family"):
        m, h = get("family", case, "attiqa"), get("family", case, "handcrafted")
        lines.append(f"| {case} | {m['srcc']:.3f} | {h['srcc']:.3f} | {m['on_shift']:+.3f} | {m['max_off_abs_shift']:.3f} |")
    lines += ["", "| mixed case (varied attribute) | SRCC attiqa | SRCC handcrafted | fixed attr. abs. SRCC attiqa | "
                  "fixed attr. abs. SRCC handcrafted | fixed attr. shift attiqa |", "|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in rows if r["section"] == "mixed"):
        m, h = get("mixed", case, "attiqa"), get("mixed", case, "handcrafted")
        lines.append(f"| {case} ({m['attribute']}) | {m['srcc']:.3f} | {h['srcc']:.3f} | {m['fixed_abs_srcc']:.3f} | "
                     f"{h['fixed_abs_srcc']:.3f} | {m['fixed_abs_shift']:.3f} |")
    j = get("jpeg", "JPEG quality 95 -> 10, mean of 5 scores", "attiqa")
    seen = "never seen in training" if j["unseen"] else "trained on"
    lines += ["", f"JPEG quality 95 -> 10 ({seen}): mean attribute score SRCC with quality "
                  f"{j['srcc']:.3f}, shift {j['on_shift']:+.3f}."]
    return "\n".join(lines) + "\n"


def report_files(
    folders: List[str], metadata: dict, *, holdout_every: Optional[int] = None, all_images: bool = False,
    max_images: Optional[int] = None,
) -> List[Path]:
    """The photos a report runs on: the checkpoint's held-out split among ``folders``.

    The split is the file names recorded in ``metadata`` (``training.holdout_files``)
    unless ``holdout_every`` is given (then every N-th photo by sorted path, as
    :func:`attiqa_train.sampling.split_every_nth`; 5 when nothing is recorded);
    ``all_images`` takes every photo. At most ``max_images``, evenly spaced so every
    source folder is represented. Raises ``ValueError`` when nothing is left.
    """
    files = list_images(folders)
    if not all_images:
        recorded = metadata.get("training", {}).get("holdout_files") or []
        if holdout_every is None and recorded:
            names = {Path(p).name for p in recorded}
            files = [f for f in files if f.name in names]
        else:
            files = split_every_nth(files, holdout_every or 5)[1]
        if not files:
            raise ValueError(f"no held-out photos found among {list(folders)}")
    if max_images is not None and len(files) > max_images:
        step = len(files) / max_images
        files = [files[int(i * step)] for i in range(max_images)]
    return files


def add_model_and_photo_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--images``, ``--holdout-every``, ``--all-images``: the model a
    report tests and the photos it runs on (see :func:`report_files`)."""
    parser.add_argument("--checkpoint", type=Path, default=None, help="model to test (default: the embedded one)")
    parser.add_argument("--images", nargs="+", required=True, help="photo folders; the held-out split is used")
    parser.add_argument("--holdout-every", type=int, default=None,
                        help="held-out split as in training (default: the checkpoint's recorded split, else 5)")
    parser.add_argument("--all-images", action="store_true", help="use every photo, not only the held-out ones")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_photo_arguments(parser)
    parser.add_argument("--levels", type=int, default=6, help="graded levels per degradation (default 6)")
    parser.add_argument("--max-images", type=int, default=24, help="at most this many photos (default 24)")
    parser.add_argument("--max-side", type=int, default=320, help="photos downscaled to this longer side (default 320)")
    parser.add_argument("--out", type=Path, required=True, help="folder for validity.csv and validity.md")


def option_error(args: argparse.Namespace) -> Optional[str]:
    """The first option value the report cannot run with, as ``"--option must be ..., got
    value"``; None when every value is usable."""
    if args.levels < 2:
        return f"--levels must be >= 2 (a rank correlation needs two levels), got {args.levels}"
    if args.max_side < MIN_SIZE:
        return f"--max-side must be >= {MIN_SIZE} (the network's smallest input), got {args.max_side}"
    if args.max_images < 1:
        return f"--max-images must be >= 1, got {args.max_images}"
    if args.holdout_every is not None and args.holdout_every < 1:
        return f"--holdout-every must be >= 1, got {args.holdout_every}"
    from attiqa_loss.weights_file import weight_file_option_error

    return weight_file_option_error(args.checkpoint)


def _refuse(message: str) -> int:
    print(f"attiqa-pretrain validity: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    message = option_error(args)
    if message is not None:
        return _refuse(message)
    ckpt = args.checkpoint or default_checkpoint_path()
    try:
        net = load_attiqa(args.checkpoint)
        metadata = read_checkpoint_metadata(ckpt)
    except (FileNotFoundError, ValueError, OSError) as exc:  # CheckpointError is a ValueError
        return _refuse(f"--checkpoint {ckpt}: {exc}")
    try:
        files = report_files(args.images, metadata, holdout_every=args.holdout_every,
                             all_images=args.all_images, max_images=args.max_images)
    except ValueError as exc:
        return _refuse(str(exc))
    images = [read_image(f, max_side=args.max_side) for f in files]
    print(f"validity: {len(images)} photos, {args.levels} levels", file=sys.stderr)
    scorers = {"attiqa": lambda x: net(x, check=False), "handcrafted": handcrafted_scores}
    with torch.no_grad():
        rows = build_report(scorers, images, args.levels, trained_families(metadata))
    args.out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    write_csv(args.out / "validity.csv", rows, keys)
    md = _markdown(rows)
    with atomic_write(args.out / "validity.md", "w") as f:
        f.write(f"Model: `{ckpt}`; {len(images)} held-out photos, {args.levels} levels.\n\n" + md)
    print(md)
    for verdict in validity_verdicts(rows):  # the ship rule's validity lines (attiqa-pretrain verdict)
        print(verdict.line())
    return 0
