"""Does ``AttiqaLoss(views=n)`` make an optimiser change the attribute, not a pixel pattern?

Pixel-space gradient ascent on a frozen CNN finds small patterns that raise its score
without the change the score stands for. This script darkens photos (exposure -3.5 EV),
then runs Adam directly on their pixels asking ``AttiqaLoss`` for brightness only, with
``views`` = 0 (the image as is) and with random flips/shifts averaged, and reports:

- ``score_gain``: brightness score of the result minus that of the dark photo, both read
  the plain way (no views), so every row is judged by the same measure;
- ``luminance_gain``: mean pixel value of the result minus that of the dark photo;
- ``gain_per_luminance``: their ratio. A high ratio means the score rose without light:
  the optimiser found a pattern. Lower is more honest.

Photos: scikit-image's bundled samples (no download), centre 160 x 160 crops. Uses the
embedded default model unless ``--checkpoint`` is given. Writes a CSV atomically.

    python benchmarks/views_robustness.py                    # views 0 1 2 4, 30 steps
    python benchmarks/views_robustness.py --views 0 2 --steps 10
"""

from __future__ import annotations

import argparse
import sys

from pathlib import Path
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from attiqa_loss.io import read_image
from benchmarks import _common as common
from pretrain.diagnostics.views_probe import brightness_ascent

PHOTOS = ("astronaut.png", "chelsea.png")
COLUMNS = ("views", "steps", "score_before", "score_after", "score_gain", "luminance_gain",
           "gain_per_luminance", "s_per_step")


def sample_photos(names: Sequence[str] = PHOTOS, size: int = 160) -> torch.Tensor:
    """scikit-image's bundled photos, read at 256 px and cropped to ``size``: ``(N, 3, size, size)``."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return torch.stack([read_image(folder / n, max_side=256)[:, :size, :size] for n in names])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="views_robustness.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--views", type=int, nargs="+", default=[0, 1, 2, 4], help="values of AttiqaLoss(views=...) to compare")
    p.add_argument("--steps", type=int, default=30, help="Adam steps on the pixels (default 30)")
    p.add_argument("--checkpoint", default=None, help="a quality model .safetensors (default: the embedded model)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="CSV path (default benchmarks/results/views_robustness_cpu.csv)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if any(v < 0 for v in args.views):
        p.error(f"--views must all be >= 0, got {args.views}")
    common.set_threads(args.threads)
    device = torch.device("cpu")
    photos = sample_photos()
    rows = [brightness_ascent(photos, v, args.steps, args.checkpoint)[0] for v in args.views]
    out = args.out or common.default_output("views_robustness", device)
    common.write_csv(out, rows, COLUMNS)
    print(f"# {common.machine_description(device)}; {len(photos)} photos darkened by 3.5 EV")
    print(common.format_table(rows, COLUMNS))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
