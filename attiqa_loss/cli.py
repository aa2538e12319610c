"""``attiqa-score``: per-image attribute scores for files and folders, and folder comparisons.

Arguments are parsed before torch and timm are imported, so ``--help`` and argument
errors come back at once.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .attributes import ATTRIBUTES
from .extras import require_extra
from .helptext import PlainHelpFormatter

if TYPE_CHECKING:
    from .scoring import FolderComparison

__all__ = ["score_files", "main", "build_parser", "run_names"]

_HEADER = """Score images on five quality attributes with an attribute-aware IQA network.

Every score is in [0, 1] and quality-aligned, 1 = the desirable pole:
""" + "\n".join(f"  {name:<13} {ATTRIBUTES.descriptions[name]}" for name in ATTRIBUTES) + """

Comparing folders: with two or more folders (attiqa-score before/ after/), the output
also gives each folder's mean per attribute and its difference to the first folder.
Images with the same path relative to their folder are paired: the difference is then
the mean of the per-image differences, and csv/json list each image's difference to
its counterpart in the first folder (columns folder, name and <attribute>_diff)."""

Row = Tuple[str, List[float]]

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


def run_names(paths: Sequence[Path]) -> List[str]:
    """One distinct TensorBoard run name per path: its last component, or as many trailing
    components as needed to tell it from the others (``a/out`` and ``b/out``)."""
    parts = []
    for p in paths:
        q = Path(os.path.abspath(p))
        parts.append((q.parts[1:] if q.anchor else q.parts) or ("root",))
    names: List[str] = []
    for i, own in enumerate(parts):
        others = [o for j, o in enumerate(parts) if j != i]
        k = 1
        while k < len(own) and any(o[-k:] == own[-k:] for o in others):
            k += 1
        name = "/".join(own[-k:])
        while name in names:  # the same folder named twice
            name += "_"
        names.append(name)
    return names


def _fmt_row(label: str, width: int, values: Sequence[float], *, count: Optional[str] = None, signed: bool = False) -> str:
    spec = "+12.3f" if signed else "12.3f"
    head = f"{label:<{width}}" + (f"  {count:>6}" if count is not None else "")
    return head + "  " + "  ".join(f"{v:>{spec}}" for v in values)


def _image_table(rows: List[Row], *, mean_row: bool) -> str:
    names = list(ATTRIBUTES)
    width = max([len("path")] + [len(p) for p, _ in rows])
    lines = [f"{'path':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines += [_fmt_row(p, width, s) for p, s in rows]
    if mean_row and len(rows) > 1:
        means = [sum(s[i] for _, s in rows) / len(rows) for i in range(len(names))]
        lines.append(_fmt_row("mean", width, means))
    return "\n".join(lines)


def _format(rows: List[Row], fmt: str) -> str:
    """One folder (or files): one record per image, plus a mean row in the table."""
    names = list(ATTRIBUTES)
    if fmt == "json":
        return json.dumps([{"path": p, **{n: round(v, 6) for n, v in zip(names, s)}} for p, s in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", *names])
        writer.writerows([[p, *(f"{v:.6f}" for v in s)] for p, s in rows])
        return buf.getvalue().rstrip("\n")
    return _image_table(rows, mean_row=True)


def comparison_records(rows: List[Row], per_path: Dict[Path, List[Path]], comparison: "FolderComparison"
                       ) -> List[Dict[str, Any]]:
    """One record per scored image: ``folder`` (the PATH it was found under, the first one
    if several), ``path``, ``name`` (relative to that folder), the five scores and
    ``<attribute>_diff`` (its score minus that of the same name in the first folder;
    None for the first folder's images and for names not present in every folder)."""
    owner: Dict[str, int] = {}
    for index, files in enumerate(per_path.values()):
        for f in files:
            owner.setdefault(str(f), index)
    roots = list(per_path)
    diffs = [comparison.differences(i) if i else {} for i in range(len(roots))]
    names = [dict(zip(map(str, f.paths), f.names)) for f in comparison.folders]
    records = []
    for path, scores in rows:
        index = owner[path]
        name = names[index][path]
        diff = diffs[index].get(name)
        record: Dict[str, Any] = {"folder": str(roots[index]), "path": path, "name": name}
        record.update({n: v for n, v in zip(ATTRIBUTES, scores)})
        record.update({f"{n}_diff": (diff[n] if diff else None) for n in ATTRIBUTES})
        records.append(record)
    return records


def _format_comparison(records: List[Dict[str, Any]], rows: List[Row], fmt: str) -> str:
    names = list(ATTRIBUTES)
    columns = ["folder", "path", "name", *names, *(f"{n}_diff" for n in names)]
    if fmt == "json":
        return json.dumps([{k: (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in columns}
                           for r in records], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in records:
            writer.writerow([f"{r[k]:.6f}" if isinstance(r[k], float) else ("" if r[k] is None else r[k])
                             for k in columns])
        return buf.getvalue().rstrip("\n")
    return _image_table(rows, mean_row=False)


def folder_summary(comparison: "FolderComparison", labels: Sequence[str]) -> str:
    """The per-folder table: each folder's image count and mean per attribute, then each
    later folder's difference to the first (paired when the folders share names)."""
    names = list(ATTRIBUTES)
    width = max([len("folder")] + [len(s) for s in labels])
    lines = [f"{'folder':<{width}}  {'images':>6}  " + "  ".join(f"{n:>12}" for n in names)]
    for label, folder in zip(labels, comparison.folders):
        lines.append(_fmt_row(label, width, list(folder.means().values()), count=str(len(folder))))
    ref = labels[0]
    n = len(comparison.paired_names)
    lines.append("")
    if comparison.paired:
        lines.append(f"difference to {ref}: mean of the per-image differences over the {n} image(s) "
                     "paired by relative path")
        unmatched = sum(len(comparison.unmatched(i)) for i in range(len(labels)))
        if unmatched:
            lines.append(f"({unmatched} image(s) without a counterpart in every folder are left out)")
    else:
        lines.append(f"difference to {ref}: difference of the folder means (the folders share no file names)")
    for i, label in enumerate(labels[1:], start=1):
        count = str(n) if comparison.paired else "-"
        lines.append(_fmt_row(label, width, list(comparison.mean_difference(i).values()), count=count, signed=True))
    return "\n".join(lines)


#: Constant runs written next to the folders' runs: ``(run name, value)`` of every
#: ``mean/*`` tag, so each of those charts spans [0, 1] (the names of the enhancement runs'
#: ``enhancement.tensorboard_utils.SCALE_RUNS``).
TB_SCALE_RUNS: Tuple[Tuple[str, float], ...] = (("yscale_0_worst", 0.0), ("yscale_1_best", 1.0))
#: Steps each folder mean is logged at: two points draw a short flat line, not a dot.
TB_MEAN_STEPS = (0, 1)


def _mean_description(name: str, scale_runs: Sequence[str]) -> str:
    what = (f"{name} ({ATTRIBUTES.descriptions[name]})" if name in ATTRIBUTES
            else "all: the mean of the five attribute scores")
    return (
        f"{what}: mean over the folder's images; quality-aligned score in [0, 1], 1 = desirable, higher is "
        f"better. One run (line) per folder; the step axis (0 to 1) carries no meaning, the line is one value. "
        f"{' and '.join(scale_runs)} are reference lines that keep the axis at [0, 1]. "
        "The spread of the scores is in the histograms scores/<name>."
    )


def _write_tensorboard(logdir: Path, folder_scores: Dict[str, List[List[float]]]) -> None:
    """One run per folder under ``logdir`` (named by :func:`run_names`), plus two
    constant runs:

    - folder runs: the histograms ``scores/<name>`` of its images' scores (step 0), and
      ``mean/<name>``, ``mean/all`` (the mean of all five) at steps 0 and 1, so each mean
      draws as a short horizontal line;
    - :data:`TB_SCALE_RUNS` (``yscale_0_worst``, ``yscale_1_best``): ``mean/*`` = 0 and 1
      at the same steps, which keeps every mean chart at [0, 1] (TensorBoard scales an
      axis to the data; with them 0.92 and 0.95 look close, as they are).

    The ``mean/*`` tags carry a description (the tooltip): quality-aligned, 1 = desirable.
    Runs are created in the order 0 line, folders, 1 line: TensorBoard colours runs in
    the order they started.
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import scalar

    scale_runs: List[Tuple[str, float]] = []
    for name, value in TB_SCALE_RUNS:
        while name in folder_scores:  # a folder with that very name keeps it
            name += "_"
        scale_runs.append((name, value))
    descriptions = {name: _mean_description(name, [r for r, _ in scale_runs]) for name in [*ATTRIBUTES, "all"]}

    def write_means(writer, means: Dict[str, float]) -> None:
        file_writer = writer._get_file_writer()
        for step in TB_MEAN_STEPS:
            for name, value in means.items():
                summary = scalar(f"mean/{name}", float(value), new_style=True)
                summary.value[0].metadata.summary_description = descriptions[name]
                file_writer.add_summary(summary, step)

    runs: List[Tuple[str, Optional[List[List[float]]]]] = [
        (scale_runs[0][0], None), *folder_scores.items(), (scale_runs[1][0], None)]
    constant = dict(scale_runs)
    for label, rows in runs:
        writer = SummaryWriter(str(logdir / label))
        if rows is None:
            write_means(writer, {name: constant[label] for name in descriptions})
        else:
            scores = torch.tensor(rows)
            for i, name in enumerate(ATTRIBUTES):
                writer.add_histogram(f"scores/{name}", scores[:, i], 0)
            write_means(writer, {**dict(zip(ATTRIBUTES, scores.mean(dim=0).tolist())), "all": scores.mean().item()})
        writer.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attiqa-score",
        description=_HEADER,
        formatter_class=PlainHelpFormatter,
        epilog="Exit status 1 if any file could not be read or scored, out-of-memory included (the rest are still "
        "scored);\n"
        "2 if a path does not exist, no image was found, or the model cannot be loaded.",
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
        "after its folder, with parent folders added where two names would clash; the runs yscale_0_worst and "
        "yscale_1_best hold the mean charts at 0 to 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
    from .loss import load_attiqa
    from .scoring import compare_folders, folder_scores_from_rows, score_files
    from .checks import check_device

    device = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_device(device)
    except ValueError as exc:
        raise SystemExit(f"attiqa-score: --device: {exc}") from None
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
            print(_format_comparison(records, rows, args.format))
        summary = folder_summary(comparison, [str(p) for p in per_path])
        if args.format == "table":
            print("\n" + summary)
        else:
            print(summary, file=sys.stderr)
    elif rows or args.format != "table":
        # csv/json consumers get a parseable (header-only / empty) document even if nothing scored
        print(_format(rows, args.format))
    if args.logdir is not None and rows:
        runs = {name: folder.scores.tolist() for name, folder in zip(run_names(list(per_path)), folders)}
        _write_tensorboard(args.logdir, {k: v for k, v in runs.items() if v})
        print(f"attiqa-score: TensorBoard logs in {args.logdir} (tensorboard --logdir {args.logdir})", file=sys.stderr)
    for line in resized_note("attiqa-score", resized, args.max_side):
        print(line, file=sys.stderr)
    if failures:
        print(f"attiqa-score: {len(failures)} of {len(files)} file(s) could not be scored:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
