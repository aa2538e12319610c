"""``attiqa-enhance demo`` (the README's ``make demo``): the main job, offline, on CPU.

Trains the low-light U-Net (300 steps by default, under a minute on a 2-core CPU) on
synthetic pairs (clean photos darkened on the fly: exposure and gamma, colour cast,
sensor noise) with fidelity terms plus the default ``AttiqaLoss``, then prints a table
of attribute scores on held-out photos (input, this short run, clean) with PSNR/SSIM and
writes a picture of them side by side. When the package ships an enhancer
(``enhancement/weights/enhancer_default.safetensors``, trained by the committed recipe
``configs/enhance_shipped.yaml``) it runs on the same photos and gets a column of its own.

Photos: ``--data DIR``, or, by default, the sample photographs that ship inside
scikit-image (no download). Scores are quality-aligned: 1 = sharp, high contrast, well
lit, colourful, noise-free.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from attiqa_loss.attributes import ATTRIBUTES
from attiqa_loss.helptext import PlainHelpFormatter

DESCRIPTION = __doc__

#: Colour photographs bundled in scikit-image's wheel (not fetched with pooch).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png")

#: Settings that keep the demo short on a 2-core CPU (``--set`` wins).
DEMO_OVERRIDES = (
    "data.mode=synthetic",
    "data.task=lowlight",
    "data.val_images=2",
    "data.crop_size=96",
    "data.max_side=384",
    "data.num_workers=0",
    "model.width=16",
    "model.depth=3",
    "model.blocks=1",
    "model.output=gain",
    "model.gain_residual=0.1",
    "loss.lpips_weight=0.0",
    "val.lpips=false",
    "loss.attiqa_weight=0.1",
    "loss.ssim_weight=0.0",
    "train.batch_size=4",
    "train.lr=0.001",
    "train.warmup_steps=20",
    "train.ema_decay=0.0",
    "train.log_every=10",
    "val.crop_size=0",
    "val.grid_images=2",
)


def sample_photos(dest: Path) -> Path:
    """Copy scikit-image's bundled colour photos into ``dest``; returns ``dest``."""
    try:
        import skimage
    except ImportError:
        raise SystemExit(
            "attiqa-enhance demo: scikit-image is not installed; pass --data DIR with your own photos "
            "or `pip install scikit-image` (the `demo` extra)"
        ) from None
    src = Path(skimage.__file__).parent / "data"
    found = [src / n for n in SKIMAGE_PHOTOS if (src / n).is_file()]
    if len(found) < 3:
        raise SystemExit(f"attiqa-enhance demo: found only {len(found)} sample photos in {src}; pass --data DIR")
    dest.mkdir(parents=True, exist_ok=True)
    for f in found:
        shutil.copy2(f, dest / f.name)
    return dest


#: Metric keys of runs written before the clean image's role was called ``reference``.
_OLD_ROLE_NAMES = {"reference": "target"}


#: Table columns: metric role -> heading.
_COLUMNS = {"input": "input", "output": "output", "shipped": "shipped", "reference": "reference"}


def format_table(metrics: Dict[str, float]) -> str:
    """Attribute table: one row per attribute, columns input | output | shipped | reference
    (those present in ``metrics``).

    ``metrics`` as in ``metrics.json`` (``attributes/<name>/<role>``, ``val/psnr``, ...),
    plus the shipped enhancer's ``attributes/<name>/shipped``, ``val/psnr_shipped`` and
    ``val/ssim_shipped`` (:func:`shipped_metrics`); the older ``attributes/<name>/target``
    keys are read as ``reference``.
    """
    metrics = dict(metrics)
    for new, old in _OLD_ROLE_NAMES.items():
        for a in ATTRIBUTES:
            if f"attributes/{a}/{old}" in metrics:
                metrics.setdefault(f"attributes/{a}/{new}", metrics[f"attributes/{a}/{old}"])
    roles = [r for r in _COLUMNS if any(f"attributes/{a}/{r}" in metrics for a in ATTRIBUTES)]
    header = f"{'attribute':<13}" + "".join(f"{_COLUMNS[r]:>10}" for r in roles)
    lines = [header, "-" * len(header)]
    for a in ATTRIBUTES:
        lines.append(f"{a:<13}" + "".join(f"{metrics.get(f'attributes/{a}/{r}', float('nan')):>10.3f}" for r in roles))
    if "val/psnr" in metrics:
        nan = float("nan")
        shipped = "val/psnr_shipped" in metrics
        lines.append("")
        lines.append(
            f"PSNR {metrics.get('val/psnr_input', nan):.2f} -> {metrics['val/psnr']:.2f} dB"
            + (f" (shipped {metrics['val/psnr_shipped']:.2f})" if shipped else "")
            + f", SSIM {metrics.get('val/ssim_input', nan):.3f} -> {metrics.get('val/ssim', nan):.3f}"
            + (f" (shipped {metrics['val/ssim_shipped']:.3f})" if shipped else "")
            + " (input -> output, against the clean reference)"
        )
    return "\n".join(lines)


def save_samples(val, out: Path, shipped=None) -> Path:
    """Write the held-out photos ``val`` (the decoded validation set of the run in ``out``)
    as ``<name>_input|output|shipped|reference.png`` under ``out/samples`` (``shipped``:
    the shipped enhancer, or None) and ``out/comparison.png``: one row per photo, input |
    output | shipped | reference, each 256 px high, under a header band naming the columns."""
    import torch

    from attiqa_loss.io import save_image

    from .tensorboard_utils import labelled_strip, stack_rows
    from .weights import load_enhancer

    model = load_enhancer(out)
    folder = out / "samples"
    rows = []
    with torch.no_grad():
        for sample in val:
            stem = Path(str(sample["name"])).stem
            images = {"input": sample["input"], "output": model(sample["input"][None]).clamp(0, 1)[0]}
            if shipped is not None:
                images["shipped"] = shipped(sample["input"][None]).clamp(0, 1)[0]
            if sample.get("target") is not None:
                images["reference"] = sample["target"]
            for role, image in images.items():
                save_image(image, folder / f"{stem}_{role}.png")
            for old in _OLD_ROLE_NAMES.values():  # an earlier demo's name for the same image
                (folder / f"{stem}_{old}.png").unlink(missing_ok=True)
            panels = [_to_height(im, 256) for im in images.values()]
            if rows:
                rows.append((torch.cat(panels, dim=-1).clamp(0, 1) * 255).round().to(torch.uint8))
            else:  # the first row carries the header naming the columns
                rows.append(labelled_strip(panels, list(images)))
    if rows:
        save_image(stack_rows(rows, 255).float() / 255, out / "comparison.png")
    return folder


def _to_height(image, height: int):
    """``(3, H, W)`` -> ``(3, height, W * height / H)``, bilinear with antialiasing."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    return F.interpolate(image[None], size=(height, max(1, round(w * height / h))), mode="bilinear",
                         antialias=True, align_corners=False)[0].clamp(0, 1)


def shipped_metrics(val, quality_checkpoint: Optional[str]):
    """The shipped enhancer and its metrics on the demo's held-out photos ``val``, in
    :func:`format_table`'s keys, scored by the same quality model as the short run;
    ``(None, {})`` when this install has no shipped enhancer."""
    import torch

    from attiqa_loss import AttiqaLoss

    from .heldout import evaluate
    from .weights import DEFAULT_ENHANCER_PATH, load_enhancer

    if not DEFAULT_ENHANCER_PATH.is_file():
        return None, {}
    shipped = load_enhancer()
    quality = AttiqaLoss(checkpoint=quality_checkpoint)
    metrics, scores, _ = evaluate(shipped, val, quality=quality, device=torch.device("cpu"))
    out = {f"attributes/{a}/shipped": v for a, v in scores.get("output", {}).items()}
    out.update({f"val/{k}_shipped": metrics[k] for k in ("psnr", "ssim") if k in metrics})
    return shipped, out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attiqa-enhance demo", description=DESCRIPTION,
                                formatter_class=PlainHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="folder of clean photos (default: scikit-image samples)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300: under a minute on a free 2-core CPU)")
    p.add_argument("--checkpoint", default=None, help="quality model for AttiqaLoss (default: the embedded one)")
    p.add_argument("--config", type=Path, default=None, help="start from this YAML config instead of the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value after the demo's settings (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out, only the files it recorded writing in "
                   "OUT/attiqa-run.json (without it, an --out holding a run is refused)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)  # before torch: --help answers at once

    from attiqa_train.config import ConfigError, load_config

    from .config import EnhanceConfig
    from .train import RUN_FILES, train

    if args.steps < 1:
        raise SystemExit(f"attiqa-enhance demo: --steps must be >= 1, got {args.steps}")
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"attiqa-enhance demo: --out {args.out} is a file, not a folder")
    # A missing input is a usage error (status 2), said before anything is written to --out.
    for flag, path, folder in (("--data", args.data, True), ("--checkpoint", args.checkpoint, False),
                               ("--config", args.config, False)):
        if path is None:
            continue
        if not Path(path).exists():
            raise SystemExit(f"attiqa-enhance demo: {flag} {path}: no such {'folder' if folder else 'file'}")
        if folder and not Path(path).is_dir():
            raise SystemExit(f"attiqa-enhance demo: {flag} {path} is not a folder (a folder of photos is expected)")
        if not folder and Path(path).is_dir():
            raise SystemExit(f"attiqa-enhance demo: {flag} {path} is a folder, not a file")
    # Besides the training run's files the demo writes these (the photos only when it samples them).
    own = ("samples", "comparison.png") + (("photos",) if args.data is None else ())
    present = [n for n in (*RUN_FILES, *own) if (args.out / n).exists()]
    from attiqa_train.rundir import RunFolderError, check_replaceable, lock_folder, not_replaceable, record_files

    if present and not args.overwrite:  # before any work (the photos are sampled into --out)
        why = not_replaceable(args.out, present, [n for n in present if n in RUN_FILES])
        if why is not None:  # the user's files: --overwrite would be refused too
            raise SystemExit(f"attiqa-enhance demo: {why}: they are not a run to replace, so choose another --out "
                             "(or move them out of the folder)")
        raise SystemExit(f"attiqa-enhance demo: {args.out} already holds a run ({', '.join(present)}); "
                         "--overwrite replaces it, or choose another --out")

    try:
        with lock_folder(args.out, "attiqa-enhance demo"):
            # --overwrite replaces only what a run wrote (the training run's folders, tb/, are deleted: every
            # file in them must be the run's)
            check_replaceable(args.out, present, deleted_folders=[n for n in present if n in RUN_FILES])
            record_files(args.out, "attiqa-enhance demo", own)
    except RunFolderError as exc:
        raise SystemExit(f"attiqa-enhance demo: {exc}") from None
    data = args.data if args.data is not None else sample_photos(args.out / "photos")
    overrides: List[str] = [
        *DEMO_OVERRIDES,
        f"train.steps={args.steps}",
        f"train.state_every={max(1, args.steps // 3)}",
        f"train.val_every={max(1, args.steps // 6)}",  # six points per TensorBoard line (50 of 300 steps)
        "val.at_start=true",  # and the untrained starting point
        f"data.train_dir={data}",
    ]
    if args.checkpoint:
        overrides.append(f"loss.attiqa_checkpoint={args.checkpoint}")
    try:
        cfg = load_config(EnhanceConfig, args.config, [*overrides, *args.overrides])
    except (ConfigError, FileNotFoundError) as exc:
        raise SystemExit(f"attiqa-enhance demo: {exc}") from None
    print(f"attiqa-enhance demo: {args.steps} steps on photos in {data}; output in {args.out}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        metrics = train(cfg, args.out, overwrite=args.overwrite)
    except ValueError as exc:  # another process holds --out, ...
        raise SystemExit(f"attiqa-enhance demo: {exc}") from None
    minutes = (time.perf_counter() - t0) / 60
    from .run_data import build_data

    _, val, _ = build_data(cfg)  # the run's held-out photos, decoded once for both
    shipped, extra = shipped_metrics(val, args.checkpoint)
    samples = save_samples(val, args.out, shipped)
    print()
    print(f"Attribute scores on {cfg.data.val_images} held-out photos, darkened (input), enhanced by this short "
          "run (output)" + (" and by the shipped enhancer (shipped)" if shipped is not None else "")
          + ", clean (reference);")
    print("quality-aligned: 1 = sharp, high contrast, well lit, colourful, noise-free.")
    print()
    print(format_table({**metrics, **extra}))
    print()
    print(f"trained in {minutes:.1f} min")
    print(f"TensorBoard: tensorboard --logdir {args.out / 'tb'}")
    columns = "input | output | shipped | reference" if shipped is not None else "input | output | reference"
    print(f"picture ({columns}): {args.out / 'comparison.png'}")
    print(f"images: {samples}")
    print(f"enhancer weights: {args.out / 'enhancer.safetensors'}")
    if shipped is not None:
        print(f"enhance a folder: attiqa-enhance infer --data PHOTOS --out {args.out / 'enhanced'} "
              f"(the shipped enhancer; --checkpoint {args.out / 'enhancer.safetensors'} for this run's)")
    else:
        print(f"enhance a folder: attiqa-enhance infer --checkpoint {args.out / 'enhancer.safetensors'} "
              f"--data PHOTOS --out {args.out / 'enhanced'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
