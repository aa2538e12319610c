"""Robustness of quality models as a loss, side by side: anchors, bounded attacks, generator.

One command runs the ``attiqa-pretrain robustness`` report
(pretrain/diagnostics/robustness_report.py) for one or more checkpoints on the same
photos and settings, and writes one CSV with a ``model`` column plus, per model, the
markdown tables and PNG strips under ``--strips``.

Photos: the held-out split of ``--images`` (default: the shared photo folder beside the
repository when it exists, else scikit-image's bundled samples, all of them).

    python benchmarks/robustness.py                                   # the embedded model, views 0 and 2
    python benchmarks/robustness.py --checkpoint default runs/hard/checkpoint.safetensors
    python benchmarks/robustness.py --quick                           # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from attiqa_loss import load_attiqa, read_checkpoint_metadata
from attiqa_loss.io import atomic_write
from attiqa_loss.loss import default_checkpoint_path
from benchmarks import _common as common

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pristine"


def _photos(args) -> Tuple[Optional[List[Path]], Optional[List[str]]]:
    """``(files, None)`` for fixed files, or ``(None, folders)`` whose held-out split is used."""
    if args.images:
        return None, args.images
    if SHARED_PHOTOS.is_dir():
        return None, [str(SHARED_PHOTOS)]
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    files = [folder / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                                  "hubble_deep_field.jpg", "immunohistochemistry.png", "retina.jpg", "camera.png",
                                  "brick.png") if (folder / n).is_file()]
    return files, None


def main(argv: Optional[List[str]] = None) -> int:
    from pretrain.diagnostics.robustness_report import add_arguments, build_rows, centre_crops, markdown, save_grid
    from pretrain.diagnostics.validity_report import report_files

    p = argparse.ArgumentParser(prog="robustness.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=["default"],
                   help="models to compare: .safetensors paths or 'default' (the embedded model)")
    p.add_argument("--images", nargs="+", default=None, help="photo folders (default: see above)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 photos, 64 px crops, views 0, 2 steps, one radius")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="CSV path (default benchmarks/results/robustness_cpu.csv)")
    p.add_argument("--strips", type=Path, default=Path("runs/robustness_benchmark"),
                   help="folder for the per-model markdown and PNG strips (default runs/robustness_benchmark)")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    report = argparse.ArgumentParser()
    add_arguments(report)
    settings = ["--images", "x", "--out", "x"]
    if args.quick:
        settings += ["--views", "0", "--eps", "4", "--steps", "2", "--generator-steps", "2", "--max-images", "5",
                     "--anchor-sizes", "64", "--crop", "64"]
    r = report.parse_args(settings)
    files, folders = _photos(args)
    rows, t0 = [], time.perf_counter()
    for name in args.checkpoint:
        ckpt = None if name == "default" else Path(name)
        net = load_attiqa(ckpt)
        if files is None:
            meta = read_checkpoint_metadata(ckpt or default_checkpoint_path())
            chosen = report_files(folders, meta, max_images=r.max_images)
        else:
            chosen = files[: r.max_images]
        clean = centre_crops(chosen, r.crop, r.max_side)
        these, strips = build_rows(net, clean, r)
        label = "default" if ckpt is None else ckpt.parent.name or ckpt.stem
        folder = args.strips / label
        folder.mkdir(parents=True, exist_ok=True)
        for fname, (grid, cols, row_names) in strips.items():
            save_grid(folder / fname, grid, cols, row_names)
        md = markdown(these)
        with atomic_write(folder / "robustness.md", "w") as f:
            f.write(f"Model: `{ckpt or default_checkpoint_path()}`; {len(clean)} photos.\n\n{md}")
        print(f"## {label} ({len(clean)} photos)\n\n{md}")
        rows += [{"model": label, **row} for row in these]
    out = args.out or common.default_output("robustness", torch.device("cpu"))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    common.write_csv(out, rows, columns)
    print(f"# {common.machine_description(torch.device('cpu'))}; {time.perf_counter() - t0:.0f} s")
    print(f"wrote {out} and {args.strips}/<model>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
