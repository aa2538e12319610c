"""How good is an enhancer, judged by measures nothing was trained on?

Runs every method on two held-out sets (``benchmarks/_enhance_sets.py``: clean photos
darkened by a camera-like pipeline the enhancer never saw, with their references; and
real dark shots without; with ``--normal`` also the clean photos as they are) and measures each output with judges that no method optimised:
PSNR and SSIM against the reference (pairs), NIQE (``attiqa_loss.measures``, Mittal et
al. 2013, pristine model fitted on this project's photos: compare ranks, lower is
better), colourfulness (Hasler and Suesstrunk) and its cast term (the average colour's
distance from grey: a colourfulness gain with a cast gain beside it is a tint), detail (Laplacian variance of the
luminance), RMS contrast (structure kept?), a noise estimate, mean luminance and the
fraction of clipped pixels. The
attiqa scores (the embedded model) are listed beside them, marked ``*``: they are the
judge that ``AttiqaLoss`` runs optimise, so they cannot settle a comparison.

Methods: ``input``, ``gamma``, ``clahe`` (no training) and every ``--enhancer NAME=PATH``
(an ``enhancer.safetensors`` or a run folder of ``attiqa-enhance train``). Writes
``per_image.csv``, ``summary.csv``, ``summary.md`` and, per set, ``strip_<set>.png``
(input | every method | reference) to ``--out``.

    python benchmarks/enhance_quality.py --photos PRISTINE --dark DARK_SHOTS \\
        --enhancer zerodce=runs/zerodce --enhancer attiqa=runs/lowlight --out benchmarks/results/enhance_quality
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from attiqa_loss import ATTRIBUTES, AttiqaLoss
from attiqa_loss import measures as m
from benchmarks import _common as common
from benchmarks._enhance_sets import BASELINES, load_set

MEASURES = ("psnr", "ssim", "niqe", "colourfulness", "cast", "detail", "contrast", "noise", "luminance", "clipped")
COLUMNS = ("set", "method", "image", *MEASURES, *(f"attiqa_{a}" for a in ATTRIBUTES))


def measure(out: torch.Tensor, reference: Optional[torch.Tensor], quality: AttiqaLoss) -> Dict[str, float]:
    """The judges of one output ``(3, H, W)``; PSNR/SSIM only with a reference."""
    import kornia

    x = out[None].float().clamp(0, 1)
    row = {
        "niqe": float(m.niqe(x)[0]) if min(x.shape[-2:]) >= 192 else float("nan"),
        "colourfulness": float(m.colourfulness(x)[0]),
        "cast": float(m.colour_cast(x)[0]),
        "detail": float(m.laplacian_variance(x)[0]),
        "contrast": float(m.rms_contrast(x)[0]),
        "noise": float(m.noise_sigma(x)[0]),
        "luminance": float(m.mean_luminance(x)[0]),
        "clipped": float(m.clipped_fraction(x)[0]),
        "psnr": float("nan"), "ssim": float("nan"),
    }
    if reference is not None:
        y = reference[None].float()
        row["psnr"] = float(kornia.metrics.psnr(x, y, 1.0))
        row["ssim"] = float(kornia.metrics.ssim(x, y, 11).mean())
    with torch.no_grad():
        scores = quality.scores(x)
    row.update({f"attiqa_{a}": float(scores[a][0]) for a in ATTRIBUTES})
    return row


def _methods(specs: Sequence[str]) -> Dict[str, object]:
    from enhancement.weights import load_enhancer

    methods: Dict[str, object] = dict(BASELINES)
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"enhance_quality.py: --enhancer expects NAME=PATH, got {spec!r}")
        if name in methods or name == "reference":
            raise SystemExit(f"enhance_quality.py: --enhancer name {name!r} is taken")
        model = load_enhancer(path)

        def run(x, model=model):
            with torch.no_grad():
                return model(x[None])[0]

        methods[name] = run
    return methods


def summarise(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Mean of every measure per (set, method), NaNs left out."""
    out = []
    keys = list(dict.fromkeys((r["set"], r["method"]) for r in rows))
    for s, meth in keys:
        group = [r for r in rows if r["set"] == s and r["method"] == meth]
        summary: Dict[str, object] = {"set": s, "method": meth, "image": f"{len(group)} images"}
        for col in COLUMNS[3:]:
            values = [float(r[col]) for r in group if not math.isnan(float(r[col]))]
            summary[col] = sum(values) / len(values) if values else float("nan")
        out.append(summary)
    return out


def markdown(summary: List[Dict[str, object]]) -> str:
    head = ("| set | method | PSNR | SSIM | NIQE (lower better) | colourfulness | colour cast | detail (Lap. var. x1e3) | "
            "RMS contrast | noise sigma x1e3 | mean luminance | clipped % | attiqa mean* |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f(v, fmt):
        return "-" if isinstance(v, float) and math.isnan(v) else format(v, fmt)

    for r in summary:
        attiqa = sum(float(r[f"attiqa_{a}"]) for a in ATTRIBUTES) / len(ATTRIBUTES)
        lines.append(f"| {r['set']} | {r['method']} | {f(r['psnr'], '.2f')} | {f(r['ssim'], '.3f')} | "
                     f"{f(r['niqe'], '.2f')} | {f(r['colourfulness'] * 100, '.1f')} | {f(r['cast'] * 100, '.1f')} | "
                     f"{f(r['detail'] * 1e3, '.2f')} | "
                     f"{f(r['contrast'], '.3f')} | "
                     f"{f(r['noise'] * 1e3, '.2f')} | {f(r['luminance'], '.3f')} | {f(r['clipped'] * 100, '.2f')} | "
                     f"{f(attiqa, '.3f')} |")
    return "\n".join(lines) + "\n\n*: the attiqa scores are what AttiqaLoss runs optimise: not a judge of them.\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="enhance_quality.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, help="clean photos: the held-out ones are darkened (the pairs set)")
    p.add_argument("--dark", type=Path, help="real dark shots: the held-out ones form the dark set")
    p.add_argument("--normal", action="store_true",
                   help="also run every method on the held-out clean photos as they are (the normal set: PSNR/SSIM "
                   "against the photo itself say how much a method changes a well-exposed photo)")
    p.add_argument("--enhancer", action="append", default=[], metavar="NAME=PATH", help="a trained enhancer (repeatable)")
    p.add_argument("--holdout-every", type=int, default=5, help="every N-th sorted file is held out (default 5)")
    p.add_argument("--dark-max-luminance", type=float, default=0.25,
                   help="dark set: keep held-out shots with a mean luminance below this (default 0.25)")
    p.add_argument("--max-side", type=int, default=512, help="images are read with this longer side at most")
    p.add_argument("--limit", type=int, default=0, help="at most this many images per set (0 = all held out)")
    p.add_argument("--strips", type=int, default=3, help="images per set in the picture strip")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR / "enhance_quality", help="output folder")
    args = p.parse_args(argv)
    if not args.photos and not args.dark:
        p.error("give --photos and/or --dark")
    if args.holdout_every < 2:
        p.error(f"--holdout-every must be >= 2, got {args.holdout_every}")
    common.set_threads(args.threads)
    from attiqa_train.files import write_text
    from enhancement.tensorboard_utils import labelled_strip, stack_rows
    from tqdm import tqdm

    methods = _methods(args.enhancer)
    quality = AttiqaLoss()
    rows: List[Dict[str, object]] = []
    if args.normal and not args.photos:
        p.error("--normal needs --photos")
    for kind, folder in (("pairs", args.photos), ("dark", args.dark), ("normal", args.photos if args.normal else None)):
        if folder is None:
            continue
        items = load_set(kind, folder, args.holdout_every, args.max_side, args.limit, args.dark_max_luminance)
        strips = []
        for i, item in enumerate(tqdm(items, desc=kind, file=sys.stderr)):
            panels = []
            for name, fn in methods.items():
                out = fn(item["input"]).clamp(0, 1)
                rows.append({"set": kind, "method": name, "image": item["name"],
                             **measure(out, item.get("reference"), quality)})
                panels.append(out)
            if "reference" in item:  # the clean photo's own measures (PSNR/SSIM left empty)
                rows.append({"set": kind, "method": "reference", "image": item["name"],
                             **measure(item["reference"], None, quality)})
                panels.append(item["reference"])
            if i < args.strips:
                strips.append(labelled_strip(panels, [*methods, "reference"][: len(panels)]))
        if strips:
            from PIL import Image

            canvas = stack_rows(strips, 255)
            args.out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(args.out / f"strip_{kind}.png")
    summary = summarise(rows)
    common.write_csv(args.out / "per_image.csv", rows, COLUMNS)
    common.write_csv(args.out / "summary.csv", summary, COLUMNS)
    table = markdown(summary)
    write_text(args.out / "summary.md", table)
    print(table)
    print(f"wrote {args.out}/per_image.csv, summary.csv, summary.md and the strips", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
