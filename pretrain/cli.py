"""``attiqa-pretrain``: the ATTIQA pipeline, one subcommand per stage.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when chosen, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "select-prompts": ("pretrain.select_prompts", "score candidate antonym prompts on a degradation proxy task"),
    "label": ("pretrain.label", "CLIP pseudo-labels (and fp16 embeddings) for a folder or file list, sharded"),
    "train": ("pretrain.train", "train the attribute-aware network (clip and/or synthetic teacher)"),
    "finetune": ("pretrain.finetune", "fit a MOS quality head on a path,mos CSV (probe or full fine-tune)"),
    "evaluate": ("pretrain.evaluate", "SRCC/PLCC/KRCC over repeated 80/20 splits, median reported"),
    "validity": ("pretrain.validity_report", "does each score follow its own degradation? (held-out photos)"),
    "robustness": ("pretrain.robustness_report", "can an optimiser fool the scores? anchors, bounded attacks, a generator"),
}

DESCRIPTION = """ATTIQA pretraining pipeline.

  select-prompts -> label -> train -> finetune / evaluate

Scores are in [0, 1] and quality-aligned: 1 = sharp, high contrast, well lit, colourful,
noise-free. Every subcommand takes --config FILE, repeatable --set dotted.key=value
overrides (unknown keys are an error) and --out DIR."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attiqa-pretrain", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the subcommand first, then let its module declare its own arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    name = known.command
    sub = argparse.ArgumentParser(
        prog=f"attiqa-pretrain {name}",
        description=getattr(module, "DESCRIPTION", SUBCOMMANDS[name][1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
