"""``attiqa-enhance``: train a U-Net enhancer with AttiqaLoss, run it, or see the demo.

    attiqa-enhance train --config configs/enhance_lowlight.yaml --data PHOTOS --out runs/lowlight
    attiqa-enhance infer --checkpoint runs/lowlight --data DARK_PHOTOS --out runs/lowlight/enhanced
    attiqa-enhance demo ...            (implemented in enhancement.demo)

Arguments are parsed before torch is imported: ``--help`` and argument errors come back at once.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from attiqa_loss.exits import EXIT_STATUS_HELP, run_reporting_io_errors
from attiqa_loss.extras import require_extra
from attiqa_loss.helptext import PlainHelpFormatter

from .cli_text import SCORES as _SCORES
from .cli_text import say as _say
from .infer_cli import INFER_DESCRIPTION, add_infer_arguments, run_infer

__all__ = ["main", "build_parser"]

DESCRIPTION = f"""Low-light enhancement and denoising with a U-Net trained on fidelity losses plus
AttiqaLoss (attribute-aware no-reference quality).

  train   train an enhancer from a YAML config (paired, synthetic or unpaired data)
  infer   enhance a folder of images with a trained enhancer; CSV of scores before/after
  demo    the offline demonstration (see `attiqa-enhance demo --help`)

{_SCORES}"""

TRAIN_DESCRIPTION = f"""Train a U-Net enhancer (the method: docs/method.md, section 9, in the source
repository).

The config (a YAML file, or a shipped one by name: enhance_lowlight, enhance_denoise, ...)
sets the data mode (paired low/ + high/ folders, synthetic pairs from clean photos, or
unpaired low-light photos), the U-Net, each loss term's weight and the optimisation.
--set overrides single values; unknown keys are an error. Runs under torchrun for DDP
(gloo on CPU, NCCL on GPU).

Writes to --out: config.yaml, state.pt (resume with --resume), enhancer.safetensors
(the final weights, read by `infer`), metrics.json and TensorBoard logs in tb/.

{_SCORES}"""

def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from attiqa_train.config import add_config_arguments

    add_config_arguments(p)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="training images (replaces data.train_dir): clean photos for synthetic mode, a folder with "
        "low/ and high/ for paired mode, low-light photos for unpaired mode",
    )
    p.add_argument(
        "--unpaired",
        type=Path,
        default=None,
        help="real photos without references (replaces data.unpaired_dir) mixed into paired or synthetic "
        "training, data.unpaired_batch of them per step, trained by the no-reference loss terms only",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/state.pt exactly where it stopped "
        "(reuses OUT/config.yaml when --config is not given; a config that changes the result is refused)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in OUT (its config, state, weights, metrics and tb/ are deleted, only as far as "
        "OUT/attiqa-run.json records that a run wrote them); without --resume or --overwrite an OUT holding a "
        "run is refused",
    )
    p.add_argument("--no-progress", action="store_true",
                   help="hide the progress bar (the same as --set train.progress=false)")


#: The exit statuses, in the epilog of every subcommand's --help.
EXIT_STATUS = ("Exit status 0 when done; otherwise one line on stderr says why (infer: 1 if some images\n"
               "failed or got NaN scores, each is named and the others are written; train: 1 if the final\n"
               "metrics are NaN);\n" + EXIT_STATUS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attiqa-enhance", description=DESCRIPTION, formatter_class=PlainHelpFormatter,
                                     epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = PlainHelpFormatter
    _add_train_arguments(
        sub.add_parser("train", help="train an enhancer", description=TRAIN_DESCRIPTION, formatter_class=fmt,
                       epilog=EXIT_STATUS)
    )
    add_infer_arguments(
        sub.add_parser("infer", help="enhance a folder", description=INFER_DESCRIPTION, formatter_class=fmt,
                       epilog=EXIT_STATUS)
    )
    sub.add_parser("demo", help="the offline demonstration (enhancement.demo)", add_help=False)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from attiqa_train.config import config_from_args

    from .config import EnhanceConfig
    from .objectives import LpipsUnavailable
    from .train import train

    saved = args.out / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        args.config = saved
    values = {"data.train_dir": str(args.data)} if args.data is not None else {}
    if args.unpaired is not None:
        values["data.unpaired_dir"] = str(args.unpaired)
    if args.no_progress:
        values["train.progress"] = False
    cfg = config_from_args(EnhanceConfig, args, values=values or None)
    import torch

    # Process-wide state is the command's business: AttiqaLoss(views > 0) draws its views
    # from the global generator (the trainer seeds only its own initial weights).
    torch.manual_seed(cfg.train.seed)
    try:
        metrics = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError, LpipsUnavailable) as exc:
        _say(f"train: error: {exc}")
        return 2
    if metrics:
        print("\n".join(f"{k}: {v:.4f}" for k, v in sorted(metrics.items())))
    bad = [f"{k}={v}" for k, v in sorted(metrics.items()) if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # a diverged run is no result: never exit 0 with NaN metrics
        _say(f"train: the final validation metrics are not finite ({', '.join(bad)}): the training diverged "
             f"(a lower train.lr or train.grad_clip may help); its files in {args.out} are kept for inspection")
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("train", "infer", "demo") else None
    # a read-only --out, a full disk, a closed or full standard output (every command prints its
    # results there): one line naming the path, exit status 3
    return run_reporting_io_errors(f"attiqa-enhance {command}" if command else "attiqa-enhance", lambda: _main(argv),
                                   prints_results=command is not None)


def _main(argv: List[str]) -> int:
    if argv and argv[0] in ("train", "infer", "demo") and not {"-h", "--help"} & set(argv[1:]):
        require_extra("attiqa-enhance", "enhance")
    if argv and argv[0] == "demo":
        # The demo owns its arguments (including --help); imported only when asked for.
        try:
            demo = importlib.import_module("enhancement.demo")
        except ModuleNotFoundError as exc:
            if exc.name != "enhancement.demo":
                raise
            _say("demo: error: this install has no enhancement.demo module")
            return 2
        return int(demo.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():  # --out is a folder in both commands
        _say(f"{args.command}: error: --out {out} is a file, not a folder")
        return 2
    if out is not None:  # a read-only folder is one line now, not a traceback after the work
        from attiqa_loss.io.atomic import check_writable

        check_writable(out)
    return run_train(args) if args.command == "train" else run_infer(args)


if __name__ == "__main__":
    sys.exit(main())
