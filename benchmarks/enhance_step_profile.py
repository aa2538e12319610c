"""Where does an ``attiqa-enhance train`` step spend its time, and does it stall?

Builds the trainer of a config (by default the demo's: ``attiqa-enhance demo``'s settings
on scikit-image's bundled photos) and runs ``--steps`` optimisation steps by hand, timing
each phase: ``data`` (the next batch: reading, cropping, the low-light synthesis),
``forward`` (the U-Net), every loss term on its own (``loss/<term>``), ``backward`` and
``step`` (clipping, AdamW, schedule, EMA), plus every validation pass. Prints the
median, 95th percentile and maximum of each phase, and the steps that took more than
``--stall`` times the median step, with the phase that made them slow.

    python benchmarks/enhance_step_profile.py --steps 150
    python benchmarks/enhance_step_profile.py --config enhance_lowlight --data PRISTINE --set model.width=16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import _common as common


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def profile(cfg, steps: int, val_every: int) -> Dict[str, object]:
    """Per-step phase seconds (``rows``) and validation seconds of ``steps`` steps of ``cfg``."""
    from attiqa_train.distributed import single_process
    from attiqa_train.sampling import StepBatchSampler
    from enhancement.train import _Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _Trainer(cfg, Path(tmp), single_process(cfg.train.device))
        loader = torch.utils.data.DataLoader(
            trainer.dataset, batch_sampler=StepBatchSampler(len(trainer.dataset), cfg.train.batch_size,
                                                            seed=cfg.train.seed, steps=steps),
            num_workers=cfg.data.num_workers)
        batches, model, opt = iter(loader), trainer.model.train(), trainer.optimizer
        rows: List[Dict[str, float]] = []
        val_seconds: List[float] = []
        for step in range(steps):
            row: Dict[str, float] = {}
            t0 = time.perf_counter()
            batch = next(batches)
            row["data"] = time.perf_counter() - t0
            x, y = batch["input"], batch.get("target")
            t = time.perf_counter()
            out = model(x, check=False)
            row["forward"] = time.perf_counter() - t
            terms: Dict[str, float] = {}
            total, _ = trainer.objective(out, y, inputs=x, timings=terms)
            row.update({f"loss/{k}": v for k, v in terms.items()})
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            total.backward()
            row["backward"] = time.perf_counter() - t
            t = time.perf_counter()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            trainer.scheduler.step()
            if trainer.ema is not None:
                trainer.ema.update(model)
            row["step"] = time.perf_counter() - t
            row["total"] = time.perf_counter() - t0
            rows.append(row)
            if val_every and (step + 1) % val_every == 0:
                t = time.perf_counter()
                trainer.validate(_NoLog())
                val_seconds.append(time.perf_counter() - t)
        return {"rows": rows, "validation": val_seconds}


class _NoLog:
    """Stands in for the TensorBoard logger: validation's own cost, without the writing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def report(result: Dict[str, object], stall: float) -> str:
    rows: List[Dict[str, float]] = result["rows"]  # type: ignore[assignment]
    phases = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| phase | median ms | p95 ms | max ms |", "|---|---|---|---|"]
    for phase in phases:
        values = [r[phase] * 1e3 for r in rows if phase in r]
        lines.append(f"| {phase} | {statistics.median(values):.1f} | {_quantile(values, 0.95):.1f} | {max(values):.1f} |")
    vals = result["validation"]
    if vals:
        # the first pass also scores the inputs and references (cached for the later ones)
        lines.append(f"| validation pass, first | {vals[0] * 1e3:.0f} | - | - |")
        if len(vals) > 1:
            later = [v * 1e3 for v in vals[1:]]
            lines.append(f"| validation pass, later | {statistics.median(later):.0f} | - | {max(later):.0f} |")
    median_total = statistics.median(r["total"] for r in rows)
    slow = [(i, r) for i, r in enumerate(rows) if r["total"] > stall * median_total]
    lines.append("")
    lines.append(f"{len(slow)} of {len(rows)} steps took more than {stall}x the median step ({median_total * 1e3:.0f} ms)"
                 + (":" if slow else "."))
    for i, r in slow[:10]:
        worst = max((k for k in r if k != "total"), key=lambda k: r[k])
        lines.append(f"- step {i}: {r['total'] * 1e3:.0f} ms, mostly {worst} ({r[worst] * 1e3:.0f} ms)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="enhance_step_profile.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="an enhance config (path or shipped name); default: the demo's settings")
    p.add_argument("--data", type=Path, default=None, help="training photos (default: scikit-image's bundled photos)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--val-every", type=int, default=50, help="time a validation pass every N steps (0 = never)")
    p.add_argument("--stall", type=float, default=3.0, help="a step longer than this times the median is a stall")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    from attiqa_train.config import load_config
    from enhancement.config import EnhanceConfig
    from enhancement.demo import DEMO_OVERRIDES, sample_photos

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or sample_photos(Path(tmp) / "photos")
        defaults = () if args.config else DEMO_OVERRIDES
        cfg = load_config(EnhanceConfig, args.config, [*defaults, *args.overrides],
                          values={"data.train_dir": str(data), "train.device": "cpu"})
        result = profile(cfg, args.steps, args.val_every)
    print(f"{args.steps} steps, batch {cfg.train.batch_size}, crop {cfg.data.crop_size}, "
          f"{cfg.data.num_workers} DataLoader workers; {common.machine_description(torch.device('cpu'))}")
    print(report(result, args.stall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
