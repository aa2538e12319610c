"""``attiqa-enhance infer``: its arguments and what it does (the entry point is
:func:`enhancement.cli.main`). Arguments are parsed before torch is imported."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

from attiqa_loss.cli import DEFAULT_MAX_SIDE as _DEFAULT_MAX_SIDE
from attiqa_loss.cli import max_side_arg as _max_side_arg

from .cli_text import SCORES as _SCORES
from .cli_text import say as _say

__all__ = ["INFER_DESCRIPTION", "add_infer_arguments", "run_infer"]


INFER_DESCRIPTION = f"""Enhance every image under --data and write the results to --out under their names
and at their sizes (an image whose longer side is above --max-side is enhanced and
written downscaled to it, said on stderr), with scores.csv listing each attribute
before and after. A file that fails (unreadable, out of memory, ...) is listed on stderr and the
others are still processed (exit status 1).

An interrupted run (killed, Ctrl-C, a failed image) continues when the same command is
run again: images already written are skipped and scores.csv, written at the end, covers
every image (OUT/attiqa-infer.jsonl records the progress). Outputs keep the bit depth of
their input where the format holds it (a 16-bit PNG gives a 16-bit PNG).

--format same keeps each input's format (JPEG inputs give JPEG outputs), png writes
lossless PNGs, jpg JPEGs; --quality sets the JPEG (and WebP) quality. The "after"
scores are those of the files as written: each output is read back from disk and
scored, so attiqa-score on --out gives the same numbers.

{_SCORES}"""


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", type=Path, default=None,
        help="a run folder (with enhancer.safetensors) or the file; default: the enhancer shipped in the package "
        "(low-light; docs/enhancement.md in the source repository)",
    )
    p.add_argument("--data", type=Path, required=True, help="image file or folder (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder for enhanced images and scores.csv")
    p.add_argument(
        "--attiqa-checkpoint",
        type=Path,
        default=None,
        help="quality model (.safetensors) for the scores; default: the model embedded in the package (the "
        "quality model an enhancer's metadata names is never loaded from there: pass it here)",
    )
    p.add_argument(
        "--format",
        dest="output_format",
        choices=("same", "png", "jpg"),
        default="same",
        help="output file format: same (as each input, default), png (lossless) or jpg",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        metavar="Q",
        help="JPEG (and WebP) quality of the outputs, 1-100 (default 95)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again: replace outputs (and scores.csv) that an earlier infer wrote in --out (recorded in "
        "OUT/attiqa-infer.jsonl); without it a finished run there is refused and an interrupted one continues. "
        "Files infer did not write are never replaced",
    )
    p.add_argument(
        "--max-side",
        type=_max_side_arg,
        default=_DEFAULT_MAX_SIDE,
        metavar="N",
        help=f"downscale images whose longer side exceeds N px before enhancing; the output has the reduced size "
        f"(default {_DEFAULT_MAX_SIDE}, which bounds the memory of one image; 'none': full size); downscaled "
        "images are named on stderr",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_infer(args: argparse.Namespace) -> int:
    if args.quality is not None and not 1 <= args.quality <= 100:
        _say(f"infer: error: --quality must be between 1 and 100, got {args.quality}")
        return 2
    if args.max_side is not None and args.max_side < 32:
        _say(f"infer: error: --max-side must be >= 32 (the quality model's smallest input) or none, got {args.max_side}")
        return 2
    import torch

    from attiqa_loss.checks import check_device

    from .infer import DEFAULT_JPEG_QUALITY, output_collisions, output_name, scan_inputs
    from .weights import load_enhancer

    try:
        device = check_device(args.device if args.device is not None else
                              ("cuda" if torch.cuda.is_available() else "cpu"))
    except ValueError as exc:
        _say(f"infer: error: --device: {exc}")
        return 2
    try:
        model = load_enhancer(args.checkpoint)
        listing = scan_inputs(args.data)
    except (FileNotFoundError, ValueError) as exc:
        _say(f"infer: error: {exc}")
        return 2
    files = listing.files
    if listing.skipped:
        _say(f"infer: {listing.summary()}")
    if not files:
        _say(f"infer: error: no images found in {args.data}")
        return 2
    root = args.data if args.data.is_dir() else args.data.parent
    out_abs, root_abs = args.out.resolve(), root.resolve()
    if out_abs == root_abs:
        _say(f"infer: error: --out must differ from the input folder {root} (it would overwrite it)")
        return 2
    if args.data.is_dir() and root_abs in out_abs.parents:
        # Outputs written under the input folder would be found as inputs by the next run.
        _say(f"infer: error: --out {args.out} is inside --data {args.data}; choose an output folder outside it")
        return 2
    if args.data.is_dir() and out_abs in root_abs.parents:
        _say(f"infer: error: --data {args.data} is inside --out {args.out}; outputs could replace inputs, "
             "choose an output folder that does not contain the inputs")
        return 2
    clashes = output_collisions(files, root, args.output_format)
    if clashes:
        target, sources = next(iter(clashes.items()))
        _say(f"infer: error: with --format {args.output_format}, {len(clashes)} output name(s) would be written "
             f"twice, e.g. {target} from {', '.join(str(f.relative_to(root)) for f in sources)}; "
             "use --format same or rename the inputs")
        return 2
    targets = [args.out / output_name(f.relative_to(root), args.output_format) for f in files]
    inputs = {f.resolve() for f in files}
    replaced = [t for t in targets if t.resolve() in inputs]
    if replaced:
        _say(f"infer: error: {len(replaced)} output(s) would replace an input, e.g. {replaced[0]}; "
             "choose another --out")
        return 2
    # The scores come from --attiqa-checkpoint or the embedded model, never from a path read
    # in the enhancer's metadata: a file the user did not write cannot steer the loader.
    quality_path = args.attiqa_checkpoint
    jpeg_quality = DEFAULT_JPEG_QUALITY if args.quality is None else args.quality
    from attiqa_train.lock import RunFolderError, acquire_lock

    from .weights import resolve_enhancer_path

    settings = _settings(args, resolve_enhancer_path(args.checkpoint), quality_path, jpeg_quality)
    try:  # one process per --out: the record of what was written is appended by this one alone
        lock = acquire_lock(args.out, "attiqa-enhance infer")
    except RunFolderError as exc:
        _say(f"infer: error: {exc}")
        return 2
    try:
        return _enhance_into(args, model, files, root, targets, quality_path, jpeg_quality, settings, device)
    finally:
        lock.release()


def _metadata_quality_model(training) -> Optional[str]:
    """The quality model an enhancer's ``training.attiqa_checkpoint`` names, quoted and cut
    to 200 characters for a message (never opened), or None when it names none."""
    named = training.get("attiqa_checkpoint") if isinstance(training, dict) else None
    if named in (None, ""):
        return None
    text = repr(named)
    return text if len(text) <= 200 else text[:197] + "..."


def _quality_model_note(quality_path, training) -> str:
    """How the summary names the quality model the scores come from; with the embedded one,
    also the model the enhancer's metadata names, if any (mentioned, never loaded)."""
    if quality_path is not None:
        return f"the quality model {quality_path} (--attiqa-checkpoint)"
    from attiqa_loss.loss import default_checkpoint_path

    note = f"the embedded quality model {default_checkpoint_path().name}"
    named = _metadata_quality_model(training)
    if named is not None:
        note += (f" (the enhancer's metadata names {named} as the quality model it was trained with: "
                 "pass --attiqa-checkpoint to score with it)")
    return note


def _settings(args: argparse.Namespace, enhancer: Path, quality_path, jpeg_quality: int) -> dict:
    """What decides the outputs, as recorded for a resumed run to compare with (the models
    by their SHA-256, so a retrained file at the same path counts as another)."""
    from attiqa_loss.loss import default_checkpoint_path
    from attiqa_train.files import sha256_file

    quality = Path(quality_path) if quality_path is not None else default_checkpoint_path()
    return {"--data": str(args.data.resolve()), "--checkpoint": sha256_file(enhancer),
            "--attiqa-checkpoint": sha256_file(quality) if quality.is_file() else str(quality),
            "--format": args.output_format, "--quality": jpeg_quality, "--max-side": args.max_side}


def _enhance_into(args, model, files, root, targets, quality_path, jpeg_quality, settings, device) -> int:
    """The part of :func:`run_infer` that runs under the lock of ``--out``: what is there
    already (an interrupted run continues, a finished one needs --overwrite, files infer
    did not write are never replaced), then the work, then ``scores.csv``."""
    from attiqa_loss import load_attiqa
    from attiqa_loss.checks import MIN_SIZE
    from attiqa_loss.cli import resized_note

    from .infer import SCORES_FILENAME, enhance_files, summarize, write_scores_csv
    from .infer_record import RECORD_NAME, InferRecord

    record = InferRecord.read(args.out)
    names = [str(t.relative_to(args.out)) for t in targets] + [SCORES_FILENAME]
    existing = [n for n in names if (args.out / n).exists()]
    foreign = [n for n in existing if n not in record.owned]
    if foreign:
        why = (f"no attiqa-enhance infer run recorded writing them in {args.out / RECORD_NAME}" if record.exists
               else f"{args.out / RECORD_NAME}, the record of what infer wrote there, is missing")
        _say(f"infer: error: {args.out} holds {len(foreign)} file(s) with the names of outputs, e.g. "
             f"{args.out / foreign[0]}, but {why}, so they are never replaced (--overwrite neither); move them out "
             "of the folder (or delete them yourself if an earlier infer wrote them), or choose another --out")
        return 2
    resuming = record.settings is not None and not record.finished and not args.overwrite
    if resuming:
        changed = record.changed_settings(settings)
        if changed:
            _say(f"infer: error: {args.out} holds an interrupted run with other settings ({', '.join(changed)} "
                 f"differ; see {args.out / RECORD_NAME}); rerun it with the same options to continue it, "
                 "or pass --overwrite to start again")
            return 2
    elif existing and not args.overwrite:
        _say(f"infer: error: {len(existing)} output file(s) already exist in {args.out}, e.g. {args.out / existing[0]}; "
             "pass --overwrite to replace them, or choose another --out")
        return 2
    elif existing:
        _say(f"infer: --overwrite: {len(existing)} existing output file(s) in {args.out} will be replaced")
    rels = [str(f.relative_to(root)) for f in files]
    earlier = {}
    if resuming:
        earlier = {rel: row for rel, f in zip(rels, files) if (row := record.completed(rel, f)) is not None}
        _say(f"infer: continuing the interrupted run in {args.out}: {len(earlier)} of {len(files)} image(s) already "
             f"written, {len(files) - len(earlier)} to go (--overwrite starts again)")
    todo = [f for rel, f in zip(rels, files) if rel not in earlier]
    quality = None
    if todo:
        try:
            quality = load_attiqa(quality_path)
        except (FileNotFoundError, ValueError) as exc:
            _say(f"infer: error: no quality model for the scores: {exc} (use --attiqa-checkpoint)")
            return 2
    resized: list = []
    try:
        if resuming:
            record.resume()
        else:
            record.begin(settings)
        new, failures = enhance_files(
            model, todo, root, args.out, quality=quality, device=device, progress=not args.no_progress,
            output_format=args.output_format, jpeg_quality=jpeg_quality, max_side=args.max_side, resized=resized,
            record=record,
        )
        by_path = {**earlier, **{str(row["path"]): row for row in new}}
        rows = [by_path[rel] for rel in rels if rel in by_path]  # in the order of the inputs, as one run writes them
        record.start(SCORES_FILENAME)
        write_scores_csv(rows, args.out / SCORES_FILENAME)
        if not failures:  # with failures the run stays open: a rerun retries only those
            record.finish(len(rows))
    finally:
        record.close()
    print(summarize(rows))
    _say(f"infer: {len(rows)} image(s) written to {args.out}"
         + (f" ({len(earlier)} of them by the interrupted run)" if earlier else "")
         + f", scores in {args.out / SCORES_FILENAME} by "
         + _quality_model_note(quality_path, getattr(model, "training_info", None)))
    for line in resized_note("attiqa-enhance infer", resized, args.max_side, verb="enhanced (and written)"):
        print(line, file=sys.stderr)
    unscored = [str(r["path"]) for r in rows if not any(str(k).endswith("_before") for k in r)]
    if unscored:  # the quality model's smallest input: written, but their scores in scores.csv are empty
        _say(f"infer: {len(unscored)} image(s) smaller than {MIN_SIZE}x{MIN_SIZE} were enhanced but not scored "
             f"(empty scores in {SCORES_FILENAME}): {', '.join(unscored[:10])}{', ...' if len(unscored) > 10 else ''}")
    non_finite = [str(r["path"]) for r in rows if not _finite_scores(r)]
    if non_finite:  # written, but a NaN score is no result: never exit 0 with one
        _say(f"infer: the quality model gave non-finite (NaN) scores for {len(non_finite)} image(s), written as nan "
             f"in {SCORES_FILENAME}: {', '.join(non_finite[:10])}{', ...' if len(non_finite) > 10 else ''}")
    if failures:
        _say(f"infer: {len(failures)} image(s) failed (a rerun of the same command retries them):")
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 1 if non_finite else 0


def _finite_scores(row: dict) -> bool:
    """Whether every before/after score of a ``scores.csv`` row is a finite number (empty: not scored)."""
    values = [v for k, v in row.items() if k.endswith(("_before", "_after")) and v not in ("", None)]
    return all(math.isfinite(float(v)) for v in values)
