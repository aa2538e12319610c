"""Throughput of ``attiqa-pretrain label`` against the bare CLIP image encoder.

For each CLIP architecture (random weights by default: this measures cost, not labels):

* ``bare``: images decoded, CLIP-resized and normalised once, up front; only
  ``model.encode_image`` over batches is timed (no_grad, fp32). The ceiling for labelling.
* ``label``: the real ``attiqa-pretrain label`` command on the same images, in a child
  process with a fresh output folder each repeat. Its own report (``run.images_per_s``
  in manifest.json: decode in DataLoader workers, preprocess, encode, score, write
  shards; process start, imports, model and text features excluded) is the figure
  compared with ``bare``.
* ``label_wall``: the same run timed from outside, start-up included, for information.

Both halves build the model the same way (``pretrain.clip.model.create_clip_teacher``,
same seed) and use the same batch size and thread count; the two alternate over repeats
and medians are reported. Writes a CSV atomically and prints a table.

    python benchmarks/label_throughput.py --device cpu
    python benchmarks/label_throughput.py --images /data/photos --clip-models ViT-B-32 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from attiqa_loss.io import list_images
from attiqa_loss.checks import check_device
from benchmarks import _common as common

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "pristine"
COLUMNS = (
    "device", "clip_model", "stage", "images", "batch", "workers", "threads", "repeats",
    "median_s", "images_per_s", "vs_bare",
)
TARGET = 0.8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/label_throughput.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + f"\nTarget: label >= {TARGET:.0%} of bare images/s.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    p.add_argument("--images", type=Path, default=None,
                   help=f"folder of photos, searched recursively (default: {DEFAULT_IMAGES})")
    p.add_argument("--limit", type=int, default=None, help="use the first N images (sorted); default: all (--quick: 8)")
    p.add_argument("--clip-models", nargs="+", default=["ViT-B-32", "RN50"],
                   help="open_clip names or model-config JSON paths (default: ViT-B-32 RN50)")
    p.add_argument("--clip-pretrained", default="none",
                   help="open_clip pretrained tag or checkpoint file; 'none' = random weights (default)")
    p.add_argument("--batch", type=int, default=None, help="encoder batch size of both halves (default: 32; --quick: 4)")
    p.add_argument("--repeats", type=int, default=None, help="alternating bare/label repeats (default: 3; --quick: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads of both halves (default: all usable cores)")
    p.add_argument("--label-workers", type=int, default=None,
                   help="DataLoader decode processes of the label run (default: the command's own default)")
    p.add_argument("--label-config", type=Path, default=None, help="--config FILE for attiqa-pretrain label")
    p.add_argument("--label-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra --set for attiqa-pretrain label (repeatable)")
    p.add_argument("--label-in-process", action="store_true",
                   help="call pretrain.cli.main in this process instead of a child process (its reported "
                        "images/s excludes start-up either way; label_wall then excludes interpreter start)")
    p.add_argument("--skip-label", action="store_true", help="measure the bare encoder only")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV path (default: benchmarks/results/label_throughput_<device>.csv)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 images, batch 4, 1 repeat (explicit flags win)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _apply_defaults(args: argparse.Namespace) -> None:
    values = {"limit": 8, "batch": 4, "repeats": 1} if args.quick else {"limit": None, "batch": 32, "repeats": 3}
    for key, value in values.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch < 1 or args.repeats < 1:
        raise ValueError(f"--batch and --repeats must be >= 1, got batch={args.batch}, repeats={args.repeats}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    # Config-file models must resolve the same from the label child (run in the repo root).
    args.clip_models = [str(Path(m).resolve()) if m.endswith(".json") else m for m in args.clip_models]
    if args.images is None:
        args.images = DEFAULT_IMAGES
    if not args.images.is_dir():
        raise FileNotFoundError(f"--images must be a folder of photos; {args.images} is not a folder")


def select_images(args: argparse.Namespace) -> List[Path]:
    files = [p.resolve() for p in list_images([args.images])]
    files = sorted(files)[: args.limit] if args.limit is not None else sorted(files)
    if not files:
        raise ValueError(f"no image files found in {args.images}")
    return files


def _teacher(name: str, args: argparse.Namespace, device: torch.device):
    from pretrain.clip.model import create_clip_teacher

    return create_clip_teacher(name, args.clip_pretrained, device=device)


def predecode(teacher, files: Sequence[Path], batch: int, device: torch.device, progress: bool) -> List[torch.Tensor]:
    """CLIP-normalised ``(b, 3, H, W)`` float batches, decoded exactly as the label command decodes."""
    from tqdm import tqdm

    from pretrain.clip.teacher import load_clip_image

    images = [load_clip_image(f, teacher.image_size, teacher.resize_mode)
              for f in tqdm(files, desc="decode", file=sys.stderr, disable=not progress)]
    return [teacher.normalize(torch.stack(images[i: i + batch]).to(device)) for i in range(0, len(images), batch)]


def time_bare(teacher, batches: Sequence[torch.Tensor], device: torch.device) -> float:
    """Seconds for one pass of ``encode_image`` over ``batches``."""
    def one_pass() -> None:
        with torch.no_grad():
            for b in batches:
                teacher.model.encode_image(b)

    return common.time_call(one_pass, device)


def label_command(name: str, out: Path, args: argparse.Namespace, listing: Optional[Path]) -> List[str]:
    """``attiqa-pretrain label`` arguments (after the program name) matching the bare half's settings."""
    cmd = ["label", "--out", str(out), "--clip-model", name,
           "--clip-pretrained", args.clip_pretrained,
           "--set", f"label.batch_size={args.batch}", "--set", f"label.device={args.device}",
           "--set", "label.precision=fp32"]
    cmd += ["--file-list", str(listing)] if listing is not None else ["--images", str(args.images)]
    if args.label_workers is not None:
        cmd += ["--workers", str(args.label_workers)]
    if args.label_config is not None:
        cmd += ["--config", str(args.label_config)]
    for item in args.label_set:
        cmd += ["--set", item]
    return cmd


def run_label(cmd: Sequence[str], out: Path, threads: int, in_process: bool) -> Dict[str, float]:
    """Run the label command; its reported images/s and elapsed loop time, and the wall time."""
    start = time.perf_counter()
    if in_process:
        from pretrain.cli import main as pretrain_main

        code = pretrain_main(list(cmd))
        if code != 0:
            raise RuntimeError(f"attiqa-pretrain {' '.join(cmd)} returned {code}")
    else:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        full = [sys.executable, "-m", "pretrain.cli", *cmd]
        proc = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"attiqa-pretrain label failed (exit {proc.returncode}): {' '.join(full)}\n{proc.stderr[-4000:]}")
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["counts"]["skipped"]:
        raise RuntimeError(f"label skipped {manifest['counts']['skipped']} unreadable file(s): {manifest['skipped'][:3]}")
    return {"images_per_s": float(manifest["run"]["images_per_s"]), "elapsed_s": float(manifest["run"]["elapsed_s"]),
            "wall_s": wall, "images": int(manifest["run"]["images_this_run"])}


def measure_model(name: str, files: Sequence[Path], args: argparse.Namespace, device: torch.device, tmp: Path) -> List[dict]:
    teacher = _teacher(name, args, device)
    batches = predecode(teacher, files, args.batch, device, not args.no_progress)
    time_bare(teacher, batches[:1], device)  # warm-up: first-call allocations, kernel choice
    listing = None
    if args.limit is not None:
        listing = tmp / "files.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
    bare, label = [], []
    for rep in range(args.repeats):
        print(f"{name}: repeat {rep + 1}/{args.repeats} bare", file=sys.stderr)
        bare.append(time_bare(teacher, batches, device))
        if not args.skip_label:
            print(f"{name}: repeat {rep + 1}/{args.repeats} label", file=sys.stderr)
            out = tmp / f"label-{Path(name).stem}-{rep}"
            label.append(run_label(label_command(name, out, args, listing), out, args.threads, args.label_in_process))
            if label[-1]["images"] != len(files):
                raise RuntimeError(f"label saw {label[-1]['images']} images, the bare encoder {len(files)}")
    n = len(files)
    bare_s = common.median(bare)
    base = {"device": device.type, "clip_model": Path(name).stem if name.endswith(".json") else name,
            "images": n, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}
    rows = [{**base, "stage": "bare", "workers": 0, "median_s": bare_s, "images_per_s": n / bare_s, "vs_bare": 1.0}]
    if label:
        workers = args.label_workers if args.label_workers is not None else min(4, os.cpu_count() or 1)
        rate = common.median([r["images_per_s"] for r in label])
        wall = common.median([r["wall_s"] for r in label])
        rows.append({**base, "stage": "label", "workers": workers, "median_s": n / rate, "images_per_s": rate,
                     "vs_bare": rate * bare_s / n})
        rows.append({**base, "stage": "label_wall", "workers": workers, "median_s": wall, "images_per_s": n / wall,
                     "vs_bare": bare_s / wall})
    return rows


def run(args: argparse.Namespace) -> List[dict]:
    """Measure every model, write the CSV, print the table and the target check; returns the rows."""
    device = check_device(args.device)
    args.threads = common.set_threads(args.threads)
    _apply_defaults(args)
    files = select_images(args)
    print(f"{len(files)} images from {args.images}", file=sys.stderr)
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        for name in args.clip_models:
            rows += measure_model(name, files, args, device, Path(tmp))
    out = args.out or common.default_output("label_throughput", device)
    common.write_csv(out, rows, COLUMNS)
    print(f"# label_throughput on {common.machine_description(device)}; {len(files)} images from {args.images}, "
          f"CLIP weights: {args.clip_pretrained}; median of {args.repeats}")
    print(common.format_table(rows, [c for c in COLUMNS if c not in ("device", "threads", "repeats")]))
    for r in rows:
        if r["stage"] == "label":
            verdict = "PASS" if r["vs_bare"] >= TARGET else "MISS"
            print(f"[{verdict}] {r['clip_model']}: label runs at {100 * r['vs_bare']:.0f}% of the bare encoder's "
                  f"images/s (target >= {100 * TARGET:.0f}%)")
    print(f"wrote {out}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
