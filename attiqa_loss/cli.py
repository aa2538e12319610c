"""``attiqa-score``: per-image attribute scores for files and folders."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .attributes import ATTRIBUTES
from .checkpoint import CheckpointError
from .io import ImageFiles, list_images
from .loss import load_attiqa
from .network import AttiqaNet
from .validation import MIN_SIZE, check_device

__all__ = ["score_files", "main"]

_HEADER = """Score images on five quality attributes with an attribute-aware IQA network.

Every score is in [0, 1] and quality-aligned, 1 = the desirable pole:
""" + "\n".join(f"  {name:<13} {ATTRIBUTES.descriptions[name]}" for name in ATTRIBUTES)


def score_files(
    net: AttiqaNet,
    files: Sequence[Path],
    *,
    batch_size: int = 8,
    device: str = "cpu",
    num_workers: int = 0,
    max_side: Optional[int] = None,
    progress: bool = True,
) -> Tuple[List[Tuple[str, List[float]]], List[Tuple[str, str]]]:
    """Score image files; images of equal size are batched together.

    Returns:
        ``(scores, failures)``: ``scores`` is a list of ``(path, [s_1..s_5])`` in input
        order (failed files omitted), ``failures`` a list of ``(path, reason)``.
    """
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        ImageFiles(files, max_side=max_side),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=ImageFiles.collate,
    )
    results: Dict[str, List[float]] = {}
    failures: List[Tuple[str, str]] = []
    net = net.to(device).eval()
    with torch.inference_mode(), tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr) as bar:
        for chunk in loader:
            groups = defaultdict(list)
            for image, path, error in chunk:
                if image is None:
                    failures.append((path, error))
                elif min(image.shape[-2:]) < 32:
                    failures.append((path, f"image is {image.shape[-1]}x{image.shape[-2]}, smaller than 32x32"))
                else:
                    groups[tuple(image.shape)].append((image, path))
            for items in groups.values():
                batch = torch.stack([im for im, _ in items]).to(device)
                out = net(batch.clamp_(0, 1)).float().cpu().tolist()
                for (_, path), row in zip(items, out):
                    results[path] = row
            bar.update(len(chunk))
    ordered = [(str(f), results[str(f)]) for f in files if str(f) in results]
    return ordered, failures


def _format(rows: List[Tuple[str, List[float]]], fmt: str) -> str:
    names = list(ATTRIBUTES)
    if fmt == "json":
        return json.dumps([{"path": p, **{n: round(v, 6) for n, v in zip(names, s)}} for p, s in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", *names])
        writer.writerows([[p, *(f"{v:.6f}" for v in s)] for p, s in rows])
        return buf.getvalue().rstrip("\n")
    width = max([len("path")] + [len(p) for p, _ in rows])
    lines = [f"{'path':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines += [f"{p:<{width}}  " + "  ".join(f"{v:>12.3f}" for v in s) for p, s in rows]
    if len(rows) > 1:
        means = [sum(s[i] for _, s in rows) / len(rows) for i in range(len(names))]
        lines.append(f"{'mean':<{width}}  " + "  ".join(f"{v:>12.3f}" for v in means))
    return "\n".join(lines)


def _write_tensorboard(logdir: Path, folder_scores: Dict[str, List[List[float]]]) -> None:
    """One run per folder under ``logdir``: histograms and means of each attribute."""
    from torch.utils.tensorboard import SummaryWriter

    for label, rows in folder_scores.items():
        writer = SummaryWriter(str(logdir / label))
        scores = torch.tensor(rows)
        for i, name in enumerate(ATTRIBUTES):
            desc = f"{name}: {ATTRIBUTES.descriptions[name]} (quality-aligned, higher is better)"
            writer.add_histogram(f"scores/{name}", scores[:, i], 0)
            writer.add_scalar(f"mean/{name}", scores[:, i].mean().item(), 0, new_style=True)
            writer.add_text(f"about/{name}", desc, 0)
        writer.add_scalar("mean/all", scores.mean().item(), 0)
        writer.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attiqa-score",
        description=_HEADER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status 1 if any file could not be read or scored (the rest are still scored); "
        "2 if a path does not exist, no image was found, or the model cannot be loaded.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", type=Path, default=None, help="a .safetensors model (default: the embedded one)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded per step; equal sizes share a batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0: in-process)")
    p.add_argument("--max-side", type=int, default=None, help="downscale images whose longer side exceeds this")
    p.add_argument(
        "--logdir",
        type=Path,
        default=None,
        help="also write each PATH's score distributions and means to TensorBoard (one run per PATH)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise SystemExit(f"attiqa-score: --batch-size must be >= 1, got {args.batch_size}")
    if args.max_side is not None and args.max_side < MIN_SIZE:
        raise SystemExit(
            f"attiqa-score: --max-side must be >= {MIN_SIZE} (the network's smallest input), got {args.max_side}"
        )
    if args.workers < 0:
        raise SystemExit(f"attiqa-score: --workers must be >= 0, got {args.workers}")
    try:
        check_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"attiqa-score: --device: {exc}") from None
    try:
        per_path = {p: list_images([p]) for p in args.paths}
    except FileNotFoundError as exc:
        print(f"attiqa-score: {exc}", file=sys.stderr)
        return 2
    files = list(dict.fromkeys(f for fs in per_path.values() for f in fs))
    if not files:
        print("attiqa-score: no image files found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2
    try:
        net = load_attiqa(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"attiqa-score: cannot load the model: {exc}", file=sys.stderr)
        return 2
    rows, failures = score_files(
        net,
        files,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        max_side=args.max_side,
        progress=not args.no_progress,
    )
    # csv/json consumers get a parseable (header-only / empty) document even if nothing scored
    if rows or args.format != "table":
        print(_format(rows, args.format))
    if args.logdir is not None and rows:
        by_file = dict(rows)
        labels = {}
        for p, fs in per_path.items():
            label = p.name or str(p)
            while label in labels:
                label += "_"
            labels[label] = [by_file[str(f)] for f in fs if str(f) in by_file]
        _write_tensorboard(args.logdir, {k: v for k, v in labels.items() if v})
        print(f"attiqa-score: TensorBoard logs in {args.logdir} (tensorboard --logdir {args.logdir})", file=sys.stderr)
    if failures:
        print(f"attiqa-score: {len(failures)} of {len(files)} file(s) could not be scored:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
