"""``attiqa-score``: per-image attribute scores for files and folders, and folder comparisons.

Arguments are parsed before torch and timm are imported, so ``--help`` and argument
errors come back at once. What the command prints and logs (tables, csv, json,
TensorBoard runs) is written by :mod:`attiqa_loss.score_output`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .attributes import ATTRIBUTES
from .exits import EXIT_STATUS_HELP, flush_stdout, run_reporting_io_errors, write_stdout
from .extras import require_extra
from .helptext import PlainHelpFormatter
from .score_output import (  # noqa: F401  (Row, TB_MEAN_STEPS, run_names: importable from here, as before)
    TB_MEAN_STEPS,
    Row,
    _format,
    _format_comparison,
    _printable,
    _write_tensorboard,
    comparison_records,
    folder_summary,
    run_names,
)

__all__ = ["score_files", "main", "build_parser", "run_names"]

_HEADER = """Score images on five quality attributes with an attribute-aware IQA network.

Every score is in [0, 1] and quality-aligned, 1 = the desirable pole:
""" + "\n".join(f"  {name:<13} {ATTRIBUTES.descriptions[name]}" for name in ATTRIBUTES) + """

Comparing folders: with two or more folders (attiqa-score before/ after/), the output
also gives each folder's mean per attribute and its difference to the first folder.
Images with the same path relative to their folder are paired: the difference is then
the mean of the per-image differences, and csv/json list each image's difference to
its counterpart in the first folder (columns folder, name and <attribute>_diff)."""


#: ``--max-side`` unless given (``attiqa-score`` and ``attiqa-enhance infer``): a longer
#: side of 4096 px keeps a 12-megapixel phone photo whole and bounds the memory one image
#: needs (about 3-4 GB for the default network on the CPU; a 6000x4500 photo took 5.9 GB).
DEFAULT_MAX_SIDE = 4096


def max_side_arg(text: str) -> Optional[int]:
    """``--max-side`` values: an integer, or ``none`` (full size, no limit)."""
    if text.strip().lower() in ("none", "full", "off"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def resized_note(prog: str, resized: Sequence[Tuple[str, Tuple[int, int], Tuple[int, int]]], max_side: int,
                 verb: str = "scored") -> List[str]:
    """The lines that say which images ``--max-side`` downscaled (empty when none was)."""
    if not resized:
        return []
    lines = [f"{prog}: {len(resized)} image(s) longer than {max_side} px were {verb} on a downscaled copy "
             f"(--max-side {max_side}; --max-side none keeps the full size):"]
    lines += [f"  {path}: {w}x{h} -> {nw}x{nh}" for path, (w, h), (nw, nh) in resized]
    return lines


def __getattr__(name: str) -> Any:
    if name == "score_files":  # kept importable from here; it lives in attiqa_loss.scoring
        from .scoring import score_files

        return score_files
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attiqa-score",
        description=_HEADER,
        formatter_class=PlainHelpFormatter,
        epilog="Exit status 1 if any file could not be read or scored, out-of-memory and non-finite (NaN) scores "
        "included\n(each is named; the rest are still scored);\n"
        "2 if a path does not exist, no image was found, or the model cannot be loaded;\n" + EXIT_STATUS_HELP,
    )
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", type=Path, default=None, help="a .safetensors model (default: the embedded one)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table); with several folders, csv and json add the columns "
                   "folder, name and <attribute>_diff, and the per-folder table goes to stderr")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded per step; equal sizes share a batch")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0: in-process)")
    p.add_argument("--max-side", type=max_side_arg, default=DEFAULT_MAX_SIDE, metavar="N",
                   help=f"downscale images whose longer side exceeds N px before scoring (default {DEFAULT_MAX_SIDE}, "
                   "which bounds the memory of one image; 'none': full size); downscaled images are named on stderr")
    p.add_argument(
        "--logdir",
        type=Path,
        default=None,
        help="also write each PATH's score distributions and means to TensorBoard (one run per PATH, named "
        "after its folder, with parent folders added where two names would clash; tags attributes/<name>, as "
        "in training runs); comparing folders, also difference/<name> (each folder minus the first) and the "
        "means and differences as text tables",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # a read-only --logdir, a full disk or standard output, a closed standard output (the scores
    # would go nowhere): one line naming it, exit status 3; a closed pipe (| head): quiet;
    # a bad option value: one line, exit status 2
    return run_reporting_io_errors("attiqa-score", lambda: _run(args), prints_results=True)


def _run(args: argparse.Namespace) -> int:
    if args.logdir is not None:
        require_extra("attiqa-score --logdir", "tensorboard")
    from .checks import MIN_SIZE  # torch from here on: after --help and argument errors

    if args.batch_size < 1:
        raise SystemExit(f"attiqa-score: --batch-size must be >= 1, got {args.batch_size}")
    if args.max_side is not None and args.max_side < MIN_SIZE:
        raise SystemExit(
            f"attiqa-score: --max-side must be >= {MIN_SIZE} (the network's smallest input), got {args.max_side}"
        )
    if args.workers < 0:
        raise SystemExit(f"attiqa-score: --workers must be >= 0, got {args.workers}")
    import torch

    from .checkpoint import CheckpointError
    from .io import ImageListing, scan_images
    from .io.atomic import check_writable
    from .loss import load_attiqa
    from .scoring import compare_folders, folder_scores_from_rows, score_files
    from .checks import check_device

    device = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_device(device)
    except ValueError as exc:
        raise SystemExit(f"attiqa-score: --device: {exc}") from None
    from .weights_file import weight_file_option_error

    folder = weight_file_option_error(args.checkpoint)
    if folder is not None:
        raise SystemExit(f"attiqa-score: {folder}")
    if args.logdir is not None:  # before any image is scored
        check_writable(args.logdir)
    paths: Dict[str, Path] = {}
    for p in args.paths:  # the same folder named twice (x, ./x, /abs/x) counts once
        paths.setdefault(os.path.abspath(p), p)
    try:
        listings = {p: scan_images([p]) for p in paths.values()}
    except FileNotFoundError as exc:
        print(f"attiqa-score: {exc}", file=sys.stderr)
        return 2
    per_path = {p: listing.files for p, listing in listings.items()}
    skipped = ImageListing(skipped=[s for listing in listings.values() for s in listing.skipped])
    if skipped.skipped:  # not image files, dangling symlinks, ...: counted, never silently dropped
        print(f"attiqa-score: {skipped.summary()}", file=sys.stderr)
    files = list(dict.fromkeys(f for fs in per_path.values() for f in fs))
    if not files:
        print("attiqa-score: no image files found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2
    try:
        net = load_attiqa(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"attiqa-score: cannot load the model: {exc}", file=sys.stderr)
        return 2
    resized: List[Tuple[str, Tuple[int, int], Tuple[int, int]]] = []
    rows, failures = score_files(
        net,
        files,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        max_side=args.max_side,
        progress=not args.no_progress,
        resized=resized,
    )
    by_file = dict(rows)
    folders = [folder_scores_from_rows(p, [(str(f), by_file[str(f)]) for f in fs if str(f) in by_file])
               for p, fs in per_path.items()]
    comparing = len(per_path) >= 2 and all(p.is_dir() for p in per_path)
    if comparing:
        comparison = compare_folders(folders)
        records = comparison_records(rows, per_path, comparison)
        if rows or args.format != "table":
            write_stdout(_format_comparison(records, rows, args.format), flush=False)
        summary = folder_summary(comparison, [str(p) for p in per_path])
        if args.format == "table":
            write_stdout("\n" + summary, flush=False)
        else:
            print(summary, file=sys.stderr)
    elif rows or args.format != "table":
        # csv/json consumers get a parseable (header-only / empty) document even if nothing scored
        write_stdout(_format(rows, args.format), flush=False)
    flush_stdout()  # a full disk or a closed pipe shows here, not silently at exit
    if args.logdir is not None and rows:
        names = run_names(list(per_path))
        runs = {name: folder.scores.tolist() for name, folder in zip(names, folders)}
        differences, how = {}, ""
        if comparing:  # each later folder minus the first, as in the printed per-folder table
            differences = {names[i]: comparison.mean_difference(i) for i in range(1, len(folders)) if runs[names[i]]}
            how = (f"mean of the per-image differences over the {len(comparison.paired_names)} image(s) paired by "
                   "relative path" if comparison.paired else "difference of the folder means")
        _write_tensorboard(args.logdir, {k: v for k, v in runs.items() if v}, differences, reference=names[0],
                           how=how)
        print(f"attiqa-score: TensorBoard logs in {args.logdir} (tensorboard --logdir {args.logdir})", file=sys.stderr)
    for line in resized_note("attiqa-score", resized, args.max_side):
        print(line, file=sys.stderr)
    if failures:
        print(f"attiqa-score: {len(failures)} of {len(files)} file(s) could not be scored:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {_printable(path)}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
