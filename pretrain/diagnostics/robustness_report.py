"""attiqa-pretrain robustness: can an optimiser fool the quality model?

Users optimise the scores, so a model is judged as an optimisation target too (see
docs/robustness.md). On held-out photos (centre crops), for one checkpoint:

1. anchors with physical values: flat fields have no detail and no contrast
   (sharpness, contrast <= 0.1), black is dark (brightness <= 0.1), grey is colourless
   (colourfulness <= 0.1), pure noise is noisy (noisiness <= 0.1), a step edge is
   sharper than the same edge blurred;
2. bounded attacks: per attribute, Adam on the pixels of photos degraded along it,
   within L-infinity 2, 4 and 8/255; the score gain against the real fix's gain, how
   far an independent measure moved, and the same two figures for the real fix clipped
   to the ball (what the radius honestly earns);
3. generator probe: a tiny conv net trained on degraded crops with the loss alone
   (every target at 1, and at the clean crops' median scores) and with L1 + 0.1 x loss;
   its outputs must stay photos (not flat, embossed or single-hue), keep their contrast
   and move the degraded attribute's independent measure the right way.

The report ends with the ship rule's lines these figures decide (PASS/FAIL each;
attiqa-pretrain verdict adds the validity report's and gives the final verdict).

Attacks and the generator run once per --views value (AttiqaLoss(views=n));
scores are always read without views. Writes OUT/robustness.csv (every row),
OUT/robustness.md (the tables) and PNG strips OUT/anchors.png,
OUT/attacks_views{n}.png, OUT/generator_views{n}.png.

Example:

  attiqa-pretrain robustness --images PHOTOS --out runs/robustness
  attiqa-pretrain robustness --checkpoint runs/hard/checkpoint.safetensors \\
      --images PHOTOS --views 0 --max-images 4 --steps 20 --out runs/quick
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from attiqa_loss import ATTRIBUTES, load_attiqa, read_checkpoint_metadata
from attiqa_loss.io import atomic_path, atomic_write, read_image
from attiqa_loss.loss import default_checkpoint_path
from attiqa_train.files import write_csv

from .robustness_anchors import ANCHOR_RULES, anchor_images, check_anchors
from .robustness_attacks import INDEPENDENT_MEASURES, attack_rows
from .robustness_generator import generator_probe
from .ship_rule import robustness_verdicts
from .validity_report import add_model_and_photo_arguments, report_files

DESCRIPTION = __doc__

def centre_crops(files: Sequence[Path], crop: int, max_side: int) -> torch.Tensor:
    """Centre ``crop`` x ``crop`` windows of the photos read at ``max_side``: ``(N, 3, crop, crop)``.

    Raises ``ValueError`` naming a photo smaller than the crop."""
    out = []
    for f in files:
        img = read_image(f, max_side=max_side)
        h, w = img.shape[-2:]
        if min(h, w) < crop:
            raise ValueError(f"{f} is {h}x{w} at --max-side {max_side}, smaller than --crop {crop}")
        top, left = (h - crop) // 2, (w - crop) // 2
        out.append(img[:, top : top + crop, left : left + crop])
    return torch.stack(out)


def save_grid(path: Path, grid: torch.Tensor, columns: Sequence[str], rows: Optional[Sequence[str]] = None) -> None:
    """Write a ``(R, C, 3, H, W)`` grid of images in [0, 1] as one PNG with text labels."""
    from PIL import Image, ImageDraw

    r, c, _, h, w = grid.shape
    label_h, label_w, gap = 14, (90 if rows else 0), 2
    canvas = Image.new("RGB", (label_w + c * (w + gap), label_h + r * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((label_w + j * (w + gap) + 2, 1), name[: w // 6], fill="black")
    for i in range(r):
        if rows:
            draw.text((2, label_h + i * (h + gap) + h // 2 - 5), rows[i][:15], fill="black")
        for j in range(c):
            arr = (grid[i, j].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(arr), (label_w + j * (w + gap), label_h + i * (h + gap)))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _f(v, spec=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(rows: List[dict]) -> str:
    """The report's tables (anchors, attacks, generator) and a line per target."""
    anchors = [r for r in rows if r["section"] == "anchor"]
    sizes = sorted({r["size"] for r in anchors})
    lines = ["| anchor | attribute | rule | " + " | ".join(f"worst at {s} px" for s in sizes) + " | met |",
             "|---|---|---|" + "---|" * len(sizes) + "---|"]
    for anchor, attr, _, _ in ANCHOR_RULES:
        these = [r for r in anchors if r["anchor"] == anchor and r["attribute"] == attr]
        if not these:
            continue
        cells = " | ".join(_f(next(r["worst"] for r in these if r["size"] == s)) for s in sizes)
        met = "yes" if all(r["passed"] for r in these) else "**no**"
        lines.append(f"| {anchor} | {attr} | {these[0]['rule']} | {cells} | {met} |")
    attacks = [r for r in rows if r["section"] == "attack"]
    if attacks:
        lines += ["", "| attribute (start) | views | eps | score gain | real fix gain | gain / fix | "
                      "independent measure moved | PSNR dB | high-freq. share | clipped fix: gain / fix | clipped fix: "
                      "measure moved |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in attacks:
            lines.append(f"| {r['attribute']} ({r['family']}) | {r['views']} | {r['eps_255']:g}/255 | "
                         f"{r['score_gain']:+.3f} | {r['fix_gain']:+.3f} | {_f(r['gain_vs_fix'], '.0%')} | "
                         f"{_f(r['measure_way'], '.0%')} | {r['psnr_db']:.1f} | {r['hf_fraction']:.0%} | "
                         f"{_f(r['clip_fix_vs_fix'], '.0%')} | {_f(r['clip_fix_measure_way'], '.0%')} |")
    gens = [r for r in rows if r["section"] == "generator"]
    if gens:
        lines += ["", "| generator trained on | views | targets | min. output/input RMS contrast | flat | embossed | "
                      "single hue | degraded attr. measure right way | PSNR dB (input) | painted cast | mean score |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        yes = lambda v: "**yes**" if v else "no"  # noqa: E731
        for r in gens:
            lines.append(f"| {r['mode']} | {r['views']} | {r['targets']} | {r['rms_ratio']:.2f} | {yes(r['flat'])} | "
                         f"{yes(r['embossed'])} | {yes(r['single_hue'])} | {r['right_way']:.0%} | "
                         f"{r['psnr_db']:.1f} ({r['psnr_in_db']:.1f}) | {r['cast_excess']:+.3f} | "
                         f"{r['mean_score']:.3f} |")
    lines += [""] + [f"- {line}" for line in targets(rows)]
    lines += ["", "Independent measures: " + "; ".join(f"{a}: {m}" for a, m in INDEPENDENT_MEASURES.items()) + "."]
    return "\n".join(lines) + "\n"


def targets(rows: List[dict]) -> List[str]:
    """One line per rule of the ship rule (:mod:`pretrain.diagnostics.ship_rule`) these
    rows decide, at the loss's default ``views``, then each reported ``views``' attack
    ratios."""
    out = [v.line() for v in robustness_verdicts(rows)]
    for views in sorted({r["views"] for r in rows if r["section"] == "attack"}):
        at4 = [r for r in rows if r["section"] == "attack" and r["views"] == views and r["eps_255"] == 4]
        if at4:
            # NaN compares False, so rows without a usable clipped fix drop out here.
            over = [f"{r['attribute']} {r['gain_vs_fix']:.0%} of the fix, "
                    f"{r['gain_vs_fix'] / r['clip_fix_vs_fix']:.1f}x the clipped fix" for r in at4
                    if r["clip_fix_vs_fix"] > 0]
            if over:
                out.append(f"4/255 attacks, views {views}: " + "; ".join(over))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_photo_arguments(parser)
    parser.add_argument("--max-images", type=int, default=10,
                        help="at most this many photos (default 10: two generator crops per attribute)")
    parser.add_argument("--max-side", type=int, default=256, help="photos downscaled to this longer side (default 256)")
    parser.add_argument("--crop", type=int, default=128, help="centre crop side in pixels (default 128)")
    parser.add_argument("--views", type=int, nargs="+", default=[0, 2],
                        help="AttiqaLoss(views=n) values the attacks and the generator optimise (default 0 2)")
    parser.add_argument("--eps", type=float, nargs="+", default=[2, 4, 8],
                        help="attack radii in 1/255 units, L-infinity (default 2 4 8)")
    parser.add_argument("--steps", type=int, default=60, help="Adam steps per attack (default 60)")
    parser.add_argument("--generator-steps", type=int, default=120, help="generator training steps (default 120)")
    parser.add_argument("--anchor-sizes", type=int, nargs="+", default=[128, 256],
                        help="anchor image sides in pixels (default 128 256)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", type=Path, required=True, help="folder for robustness.csv/.md and the PNG strips")


def _validate(args: argparse.Namespace) -> None:
    for name in ("max_images", "max_side", "steps", "generator_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.holdout_every is not None and args.holdout_every < 1:
        raise ValueError(f"--holdout-every must be >= 1, got {args.holdout_every}")
    if args.crop < 32:
        raise ValueError(f"--crop must be >= 32 (the model's minimum side), got {args.crop}")
    if any(v < 0 for v in args.views):
        raise ValueError(f"--views must all be >= 0, got {args.views}")
    if any(not 0 < e <= 255 for e in args.eps):
        raise ValueError(f"--eps must all be in (0, 255], got {args.eps}")
    if any(s < 32 for s in args.anchor_sizes):
        raise ValueError(f"--anchor-sizes must all be >= 32, got {args.anchor_sizes}")
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"--device must be 'cpu' or an available 'cuda', got {args.device!r}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {args.out}")
    from attiqa_loss.weights_file import weight_file_option_error

    folder = weight_file_option_error(args.checkpoint)
    if folder is not None:
        raise ValueError(folder)


def build_rows(net, clean: torch.Tensor, args: argparse.Namespace) -> tuple:
    """Every measurement row and the strips ``{file name: (grid, column labels, row labels)}``."""
    from tqdm.auto import tqdm

    rows = check_anchors(net, args.anchor_sizes)
    anchors = anchor_images(args.anchor_sizes[0])
    names = list(anchors)
    width = max(len(v) for v in anchors.values())
    pad = torch.ones(3, args.anchor_sizes[0], args.anchor_sizes[0])
    grid = torch.stack([torch.stack([anchors[n][i] if i < len(anchors[n]) else pad for i in range(width)])
                        for n in names])
    strips: Dict[str, tuple] = {"anchors.png": (grid, [str(i) for i in range(width)], names)}
    eps_list = [e / 255 for e in args.eps]
    for views in tqdm(args.views, desc="robustness (views)", file=sys.stderr):
        attack, attack_strips = attack_rows(net, clean, eps_list=eps_list, views=views, steps=args.steps)
        rows += attack
        strips[f"attacks_views{views}.png"] = (
            torch.stack([attack_strips[a] for a in ATTRIBUTES]),
            ["degraded", f"attack {args.eps[len(args.eps) // 2]:g}/255", "diff x8", "clean"], list(ATTRIBUTES))
        gen, gen_grid = generator_probe(net, clean, steps=args.generator_steps, views=views)
        rows += gen
        strips[f"generator_views{views}.png"] = (
            gen_grid, ["degraded"] + [r["mode"] for r in gen] + ["clean"],
            [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(len(clean))])
    return rows, strips


def run(args: argparse.Namespace) -> int:
    prog = "attiqa-pretrain robustness"
    try:
        _validate(args)
        ckpt = args.checkpoint or default_checkpoint_path()
        try:
            net = load_attiqa(args.checkpoint, map_location=args.device)
            metadata = read_checkpoint_metadata(ckpt)
        except (FileNotFoundError, ValueError, OSError) as exc:  # CheckpointError is a ValueError
            raise ValueError(f"--checkpoint {ckpt}: {exc}") from None
        files = report_files(args.images, metadata, holdout_every=args.holdout_every,
                             all_images=args.all_images, max_images=args.max_images)
        clean = centre_crops(files, args.crop, args.max_side)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    print(f"robustness: {len(clean)} photos, {args.crop} px crops, views {args.views}", file=sys.stderr)
    t0 = time.perf_counter()
    rows, strips = build_rows(net, clean, args)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(args.out / "robustness.csv", rows, keys)
    for name, (grid, cols, row_names) in strips.items():
        save_grid(args.out / name, grid, cols, row_names)
    md = markdown(rows)
    with atomic_write(args.out / "robustness.md", "w") as f:
        f.write(f"Model: `{ckpt}`; {len(clean)} held-out photos, {args.crop} px centre crops; "
                f"{args.steps} attack steps, {args.generator_steps} generator steps.\n\n" + md)
    print(md)
    print(f"wrote {args.out}/robustness.csv, robustness.md and {len(strips)} PNG strips "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
