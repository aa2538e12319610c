"""What do the scores of ordinary photos look like, and what difference matters?

For every photo of ``--images`` (searched recursively), downscaled so its longer side is
``--max-side``, this script reports per attribute:

- the spread of the scores over the photos (5th percentile, median, 95th percentile):
  the typical levels of untouched photos;
- ``crop_sd``: the median over photos of the standard deviation of the score over four
  corner crops of half the width and height: how much the score moves when only the
  framing changes, a floor under differences worth reading;
- the mean change (and its standard deviation over photos) under mild, just-visible
  edits with physical parameters: Gaussian blur sigma 1 px, Gaussian noise sigma 5/255,
  exposure x0.7 in sRGB, saturation x0.6 (mixed with luminance), contrast x0.7 (mixed
  with the mean luminance).

Uses the embedded default model unless ``--checkpoint`` is given; CPU by default. Writes
one CSV row per photo and edit (atomically) and prints the summary table.

    python benchmarks/score_levels.py --images PHOTOS
    python benchmarks/score_levels.py --images PHOTOS --max-side 512 --checkpoint runs/mine/checkpoint.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from attiqa_loss import ATTRIBUTES, load_attiqa
from attiqa_loss.io import list_images, read_image
from attiqa_loss.scoring import _relative_name
from benchmarks import _common as common

LUMA = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)


def _blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * LUMA.to(x)).sum(1, keepdim=True)


def mild_edits(seed: int = 0) -> Dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Name -> edit of a ``(1, 3, H, W)`` image in [0, 1]; the noise is seeded per call."""

    def noise(x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (x + torch.randn(x.shape, generator=g) * (5 / 255)).clamp(0, 1)

    return {
        "blur sigma 1 px": lambda x: _blur(x, 1.0).clamp(0, 1),
        "noise sigma 5/255": noise,
        "exposure x0.7": lambda x: x * 0.7,
        "saturation x0.6": lambda x: (_luma(x) + 0.6 * (x - _luma(x))).clamp(0, 1),
        "contrast x0.7": lambda x: (_luma(x).mean() + 0.7 * (x - _luma(x).mean())).clamp(0, 1),
    }


def corner_crops(x: torch.Tensor) -> torch.Tensor:
    """The four corner crops of half the height and width, ``(4, 3, H/2, W/2)``."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return torch.cat([x[..., :h, :w], x[..., :h, -w:], x[..., -h:, :w], x[..., -h:, -w:]])


def _quantile(v: torch.Tensor, q: float) -> float:
    return float(torch.quantile(v, q))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of ordinary photos (searched recursively)")
    parser.add_argument("--checkpoint", default=None, help="a .safetensors model (default: the embedded one)")
    parser.add_argument("--max-side", type=int, default=512, help="downscale photos to this longer side (default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", default=None, help="CSV path (default benchmarks/results/score_levels_cpu.csv)")
    args = parser.parse_args(argv)
    if args.max_side < 64:
        parser.error(f"--max-side must be >= 64 (two 32-px crops per side), got {args.max_side}")
    common.set_threads(args.threads)
    device = torch.device("cpu")
    net = load_attiqa(args.checkpoint).eval()
    files = list_images([args.images])
    if not files:
        parser.error(f"--images {args.images}: no images found")
    edits = mild_edits()
    rows: List[Dict[str, object]] = []
    plain, crop_sd = [], []
    shifts: Dict[str, List[torch.Tensor]] = {name: [] for name in edits}
    with torch.no_grad():
        for path in files:
            x = read_image(path, max_side=args.max_side).unsqueeze(0)
            s = net(x)[0]
            plain.append(s)
            crop_sd.append(net(corner_crops(x)).std(0))
            name_ = _relative_name(Path(path), Path(args.images))
            rows.append({"path": name_, "edit": "none", **{a: round(float(v), 4) for a, v in zip(ATTRIBUTES, s)}})
            for name, edit in edits.items():
                d = net(edit(x))[0] - s
                shifts[name].append(d)
                rows.append({"path": name_, "edit": name,
                             **{a: round(float(v), 4) for a, v in zip(ATTRIBUTES, d)}})
    out = Path(args.out) if args.out else common.default_output("score_levels", device)
    common.write_csv(out, rows, ("path", "edit", *ATTRIBUTES))

    scores, sd = torch.stack(plain), torch.stack(crop_sd)
    table = []
    for i, a in enumerate(ATTRIBUTES):
        row = {"attribute": a,
               "p5": f"{_quantile(scores[:, i], 0.05):.2f}",
               "median": f"{_quantile(scores[:, i], 0.5):.2f}",
               "p95": f"{_quantile(scores[:, i], 0.95):.2f}",
               "crop_sd": f"{_quantile(sd[:, i], 0.5):.3f}"}
        for name, d in shifts.items():
            d = torch.stack(d)[:, i]
            row[name] = f"{float(d.mean()):+.3f} ({float(d.std()):.3f})"
        table.append(row)
    print(f"{len(files)} photos from {args.images}, longer side {args.max_side}; "
          f"{common.machine_description(device)}")
    print("levels: percentiles over photos; crop_sd: median SD over 4 corner crops; "
          "edits: mean change (SD over photos)")
    print(common.format_table(table, list(table[0].keys())))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
