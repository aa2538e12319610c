"""Fit a NIQE pristine model (attiqa_loss.measures.fit_niqe) on a folder of pristine photos.

Every image under ``--images`` (searched recursively; optionally downscaled so its longer
side is ``--max-side``) contributes its sharpest ``P x P`` patches (sharpness above
``--threshold`` times the image's sharpest patch); the model is the mean and covariance
of their 36 NIQE features, written as safetensors with the fit recorded in its metadata
(the command, the number of photos and patches, the patch size and the threshold).
Photos smaller than two patches per side are skipped and counted.

    python benchmarks/fit_niqe.py --images PRISTINE --out attiqa_loss/weights/niqe_pristine.safetensors

The shipped model was fitted with exactly that command on the project's 230 pristine
photos (docs/measures.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from attiqa_loss.io import list_images, read_image
from attiqa_loss.measures import fit_niqe
from benchmarks import _common as common


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, nargs="+",
                        help="folder(s) of pristine photos (searched recursively)")
    parser.add_argument("--out", required=True, help="the model file to write (.safetensors)")
    parser.add_argument("--patch", type=int, default=96, help="patch side in pixels, even (default 96)")
    parser.add_argument("--threshold", type=float, default=0.75,
                        help="keep patches sharper than this fraction of the image's sharpest (default 0.75)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale photos to this longer side first (default: none, full size)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.patch < 8 or args.patch % 2:
        parser.error(f"--patch must be an even integer >= 8, got {args.patch}")
    if not 0 <= args.threshold < 1:
        parser.error(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.max_side is not None and args.max_side < 2 * args.patch:
        parser.error(f"--max-side must be at least 2 * --patch = {2 * args.patch}, got {args.max_side}")
    common.set_threads(args.threads)
    files = list_images(args.images)
    if not files:
        parser.error(f"--images {' '.join(args.images)}: no images found")

    skipped: List[str] = []

    def images() -> Iterator[torch.Tensor]:
        for path in tqdm(files, desc="NIQE features", unit="photo", disable=args.no_progress, file=sys.stderr):
            x = read_image(path, max_side=args.max_side)
            if min(x.shape[-2:]) < 2 * args.patch:
                skipped.append(f"{path} ({x.shape[-1]} x {x.shape[-2]})")
                continue
            yield x

    start = time.perf_counter()
    with torch.no_grad():
        model = fit_niqe(images(), patch=args.patch, sharpness_threshold=args.threshold)
    wall = time.perf_counter() - start
    model.metadata.update({
        "command": "python benchmarks/fit_niqe.py " + shlex.join(argv),
        "n_skipped_too_small": len(skipped),
        "max_side": args.max_side,
        "luminance": "Rec. 601 luma of the gamma-encoded RGB, scaled to 0-255",
        "scale_2": "2 x 2 block average of the cropped luminance",
        "mscn": "7 x 7 Gaussian window, sigma 7/6, C = 1, replicated borders",
        "reference": "Mittal, Soundararajan, Bovik, IEEE SPL 20(3), 2013",
    })
    out = model.save(args.out)
    for line in skipped:
        print(f"skipped (smaller than {2 * args.patch} px per side): {line}", file=sys.stderr)
    meta = model.metadata
    print(f"{meta['n_images']} photos ({len(skipped)} skipped), {meta['n_patches']} of {meta['n_patches_seen']} "
          f"patches of {args.patch} px kept (threshold {args.threshold}); {wall:.1f} s; "
          f"{common.machine_description(torch.device('cpu'))}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
