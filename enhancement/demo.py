"""``attiqa-enhance demo`` (the README's ``make demo``): the main job, offline, on CPU.

Trains the low-light U-Net (300 steps by default, under a minute on a 2-core CPU) on
synthetic pairs (clean photos darkened on the fly: exposure and gamma, colour cast,
sensor noise) with fidelity terms plus the default ``AttiqaLoss``, then prints a
before/after table of attribute scores on held-out photos and says where the
TensorBoard logs and the enhanced images are.

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


def format_table(metrics: Dict[str, float]) -> str:
    """Before/after table: one row per attribute, columns input | output | reference.

    ``metrics`` as in ``metrics.json``; the older ``attributes/<name>/target`` keys are
    read as ``reference``.
    """
    metrics = dict(metrics)
    for new, old in _OLD_ROLE_NAMES.items():
        for a in ATTRIBUTES:
            if f"attributes/{a}/{old}" in metrics:
                metrics.setdefault(f"attributes/{a}/{new}", metrics[f"attributes/{a}/{old}"])
    roles = [r for r in ("input", "output", "reference") if any(f"attributes/{a}/{r}" in metrics for a in ATTRIBUTES)]
    header = f"{'attribute':<13}" + "".join(f"{r:>10}" for r in roles)
    lines = [header, "-" * len(header)]
    for a in ATTRIBUTES:
        lines.append(f"{a:<13}" + "".join(f"{metrics.get(f'attributes/{a}/{r}', float('nan')):>10.3f}" for r in roles))
    if "val/psnr" in metrics:
        lines.append("")
        lines.append(
            f"PSNR {metrics.get('val/psnr_input', float('nan')):.2f} -> {metrics['val/psnr']:.2f} dB, "
            f"SSIM {metrics.get('val/ssim_input', float('nan')):.3f} -> {metrics.get('val/ssim', float('nan')):.3f} "
            "(input -> output, against the clean reference)"
        )
    return "\n".join(lines)


def save_samples(cfg, out: Path) -> Path:
    """Write the held-out photos as ``<name>_input|output|reference.png`` under ``out/samples``."""
    import torch

    from attiqa_loss.io import save_image

    from .run_data import build_data
    from .weights import load_enhancer

    _, val, _ = build_data(cfg)
    model = load_enhancer(out)
    folder = out / "samples"
    with torch.no_grad():
        for sample in val:
            stem = Path(str(sample["name"])).stem
            output = model(sample["input"][None]).clamp(0, 1)[0]
            for role, image in (("input", sample["input"]), ("output", output), ("reference", sample.get("target"))):
                if image is not None:
                    save_image(image, folder / f"{stem}_{role}.png")
            for old in _OLD_ROLE_NAMES.values():  # an earlier demo's name for the same image
                (folder / f"{stem}_{old}.png").unlink(missing_ok=True)
    return folder


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
                   help="replace an earlier run in --out (without it, an --out holding a run is refused)")
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
    present = [n for n in RUN_FILES if (args.out / n).exists()]
    if present and not args.overwrite:  # before any work (the photos are sampled into --out)
        raise SystemExit(f"attiqa-enhance demo: {args.out} already holds a run ({', '.join(present)}); "
                         "--overwrite replaces it, or choose another --out")
    data = args.data if args.data is not None else sample_photos(args.out / "photos")
    overrides: List[str] = [
        *DEMO_OVERRIDES,
        f"train.steps={args.steps}",
        f"train.state_every={max(1, args.steps // 3)}",
        f"val.every={max(1, args.steps // 6)}",  # six points per TensorBoard line (50 of 300 steps)
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
    samples = save_samples(cfg, args.out)
    print()
    print(f"Attribute scores on {cfg.data.val_images} held-out photos, darkened (input), enhanced (output), "
          "clean (reference);")
    print("quality-aligned: 1 = sharp, high contrast, well lit, colourful, noise-free.")
    print()
    print(format_table(metrics))
    print()
    print(f"trained in {minutes:.1f} min")
    print(f"TensorBoard: tensorboard --logdir {args.out / 'tb'}")
    print(f"images (input | output | reference): {samples}")
    print(f"enhancer weights: {args.out / 'enhancer.safetensors'}")
    print(f"enhance a folder: attiqa-enhance infer --checkpoint {args.out / 'enhancer.safetensors'} "
          f"--data PHOTOS --out {args.out / 'enhanced'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
