"""``attiqa-pretrain evaluate``: measure a MOS model, or the zero-shot attribute mean, on a CSV.

The model is applied as it is (no training): ``--model`` a ``mos_model.safetensors`` from
``finetune``, or ``--zero-shot --checkpoint`` an attiqa checkpoint whose prediction is the
mean of its five quality-aligned attribute scores. Metrics (SRCC, PLCC after the
4-parameter logistic fit and plain, KRCC) are reported on the whole CSV and on the test
parts of the same random splits ``finetune`` uses (median), so both tables compare.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from attiqa_loss import load_checkpoint
from attiqa_train.config import add_config_arguments, config_from_args, config_to_dict, save_config
from attiqa_train.distributed import env_rank, resolve_device
from attiqa_train.files import sha256_file

from ..metrics.correlation import correlations
from .config import EvalSection, MosDataSection
from .data import random_splits, read_mos_csv
from .model import load_mos_model, predict_images
from .report import METRICS, format_table, summarize, write_csv, write_summary

__all__ = ["DESCRIPTION", "EvaluateConfig", "add_arguments", "run"]

DESCRIPTION = """Evaluate a fine-tuned MOS model (or the zero-shot mean of the 5 attribute scores) on a path,mos CSV.

Reports SRCC, PLCC (after a 4-parameter logistic fit; plain PLCC too) and KRCC, all
higher-is-better: on every row, and the median over the test parts of eval.splits random
80/20 splits (the same splits finetune uses for the same CSV and seed). Writes
--out/results.csv (one row per split, then 'all'), summary.json and predictions.csv.
Evaluating a model on the CSV it was fitted on measures memorisation, not quality; a
warning says so when the file is the same.

Examples:
  attiqa-pretrain evaluate --model runs/koniq_probe/mos_model.safetensors --csv clive/clive.csv --out runs/eval_clive
  attiqa-pretrain evaluate --zero-shot --checkpoint runs/train/checkpoint.safetensors --csv clive/clive.csv --out runs/zs"""


@dataclass
class EvaluateConfig:
    """``model``: mos_model.safetensors; or ``zero_shot: true`` with ``checkpoint``."""

    model: Optional[str] = None
    checkpoint: Optional[str] = None
    zero_shot: bool = False
    device: str = "auto"
    data: MosDataSection = field(default_factory=MosDataSection)
    eval: EvalSection = field(default_factory=EvalSection)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--model", type=Path, help="mos_model.safetensors written by finetune; overrides model")
    parser.add_argument("--zero-shot", action="store_true", help="predict the mean of the 5 attribute scores of --checkpoint")
    parser.add_argument("--checkpoint", type=Path, help="attiqa checkpoint for --zero-shot; overrides checkpoint")
    parser.add_argument("--csv", type=Path, help="path,mos CSV; overrides data.csv")
    parser.add_argument("--images", type=Path, help="folder the CSV's relative paths resolve against (default: the CSV's folder)")


def run(args: argparse.Namespace) -> int:
    flags = {"model": args.model, "checkpoint": args.checkpoint, "data.csv": args.csv, "data.images": args.images}
    values = {key: str(value) for key, value in flags.items() if value is not None}
    if args.zero_shot:
        values["zero_shot"] = True
    cfg = config_from_args(EvaluateConfig, args, values=values)
    if env_rank() != 0:
        return 0  # inference on one CSV: rank 0 does it alone
    if not cfg.data.csv:
        raise SystemExit("error: give --csv FILE (or data.csv): the path,mos dataset")
    if cfg.zero_shot == bool(cfg.model) or (cfg.zero_shot and not cfg.checkpoint):
        raise SystemExit("error: give either --model MOS_MODEL, or --zero-shot with --checkpoint CHECKPOINT")
    weights = cfg.checkpoint if cfg.zero_shot else cfg.model
    if not Path(weights).is_file():
        raise SystemExit(f"error: {'checkpoint' if cfg.zero_shot else 'model'} not found: {weights}")
    try:
        device = resolve_device(cfg.device)
        data = read_mos_csv(cfg.data.csv, root=cfg.data.images)
        splits = random_splits(len(data), cfg.eval.splits, cfg.eval.test_fraction, cfg.eval.seed) if cfg.eval.splits else []
        model = load_checkpoint(weights) if cfg.zero_shot else load_mos_model(weights)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    info: Dict[str, Any] = getattr(model, "training_info", {}) or {}
    if not cfg.zero_shot and info.get("csv_sha256") == sha256_file(cfg.data.csv):
        print(f"warning: {weights} was fitted on this very CSV; these figures measure memorisation", file=sys.stderr)

    pred = predict_images(model, data.paths, max_side=cfg.data.max_side, device=device).numpy()
    rows = []
    for s, (_, test) in enumerate(splits):
        rows.append({"split": s, "n_test": len(test), **correlations(pred[test], data.mos[test])})
    whole = {"split": "all", "n_test": len(data), **correlations(pred, data.mos)}
    out = Path(args.out)
    write_csv(out / "results.csv", rows + [whole], ["split", "n_test", *METRICS, "logistic_fit"])
    write_csv(out / "predictions.csv",
              [{"path": str(p), "mos": float(m), "prediction": float(q)} for p, m, q in zip(data.paths, data.mos, pred)],
              ["path", "mos", "prediction"])
    summary = {
        "task": "evaluate",
        "predictor": "zero-shot mean of the 5 attribute scores" if cfg.zero_shot else f"MOS model ({getattr(model, 'mode', '?')})",
        "weights": str(weights),
        "csv": str(cfg.data.csv),
        "n": len(data),
        "all": {m: whole[m] for m in METRICS},
        **summarize(rows),
        "reported": "median over the test parts of the splits; 'all' = every row; higher-is-better",
        "config": config_to_dict(cfg),
    }
    write_summary(out / "summary.json", summary)
    save_config(cfg, out / "config.yaml")
    print(format_table(rows + [whole], summary))
    print(f"wrote {out / 'results.csv'} and {out / 'summary.json'}")
    return 0
