"""GPU readiness in one run: the CUDA tests, the loss's cost on the GPU, and one training step of each trainer.

Three parts, each reported as rows of one CSV (``benchmarks/results/gpu_check_<device>.csv``
or ``--out``) and printed as a table:

1. ``tests``: ``pytest <--tests> -k <--tests-k>`` in a child process (default ``tests -k cuda``:
   the ``device``-parametrised tests get a ``[cuda]`` id where a GPU is present, and the
   "cuda without CUDA" error tests); passed / failed / skipped counts.
2. ``loss``: ``benchmarks/loss_cost.py`` at 256 px, batch 8, in fp32, fp32 + channels_last and
   bf16 autocast + channels_last: AttiqaLoss (default and ResNet-50 architectures) against the
   CLIP-IQA-style RN50 loss and LPIPS (alex, vgg); images/s and peak memory. Its own CSV is
   written beside ``--out`` (``<stem>_loss_cost.csv``).
3. ``enhance_step`` / ``pretrain_step``: ``attiqa-enhance train`` (the demo's settings) and
   ``attiqa-pretrain train`` (synthetic teacher) run for a few steps on generated textures; the
   median wall time of one whole step (data, forward, loss, backward, optimiser), the device
   drained at every step boundary, after the first (warm-up) steps.

Random weights everywhere and generated images: nothing is downloaded. With ``--device cuda``
(the default) and no GPU, every part is skipped with a line saying so. ``--device cpu --quick``
runs the same plumbing on tiny models in seconds (the smoke test does).

    python benchmarks/gpu_check.py                      # on a GPU machine, a few minutes
    python benchmarks/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from attiqa_loss import DEFAULT_BACKBONE
from benchmarks import _common as common

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("tests", "loss", "enhance_step", "pretrain_step")
COLUMNS = ("device", "part", "name", "status", "value", "unit", "detail")


def _row(device: str, part: str, name: str, status: str, value: object = "", unit: str = "", detail: str = "") -> dict:
    return {"device": device, "part": part, "name": name, "status": status, "value": value, "unit": unit,
            "detail": detail}


# -- 1. tests ---------------------------------------------------------------------------------

def run_tests(args: argparse.Namespace) -> List[dict]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests, "-k", args.tests_k]
    print(f"tests: {' '.join(cmd[1:])}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.tests_timeout)
    except subprocess.TimeoutExpired:
        return [_row(args.device, "tests", f"-k {args.tests_k}", "FAIL", detail=f"timed out after {args.tests_timeout} s")]
    seconds = time.perf_counter() - t0
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    if proc.returncode == 5:  # pytest: no tests collected
        status = "NONE"
    else:
        status = "PASS" if proc.returncode == 0 else "FAIL"
    if status == "FAIL":
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    rows = [_row(args.device, "tests", f"-k {args.tests_k}", status, round(seconds, 1), "s", tail)]
    for key in ("passed", "failed", "skipped"):
        rows.append(_row(args.device, "tests", key, status, counts.get(key, 0), "tests"))
    return rows


# -- 2. the loss's cost ------------------------------------------------------------------------

def run_loss(args: argparse.Namespace, out: Path) -> List[dict]:
    from benchmarks import loss_cost

    csv_path = out.with_name(f"{out.stem}_loss_cost.csv")
    argv = ["--device", args.device, "--no-progress", "--out", str(csv_path),
            "--precision", *args.precision, "--backbones", *args.backbones, "--clip-model", args.clip_model,
            "--lpips-nets", *args.lpips_nets]
    if args.clip_config:
        argv += ["--clip-config", str(args.clip_config)]
    if args.quick:
        argv += ["--quick", "--kinds", "attiqa", "clipiqa", "lpips"]
    else:
        argv += ["--sizes", "256", "--batch", "8", "--repeats", "3", "--warmup", "2"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    rows = loss_cost.run(loss_cost.build_parser().parse_args(argv))
    return [_row(args.device, "loss", f"{r['method']} {r['precision']} {r['size']}px", "OK",
                 round(r["images_per_s"], 2), "images/s",
                 f"x{r['speed_vs_ref']:.2f} of {rows[0]['method']}; peak {r['peak_mem_mib']:.0f} MiB; see {csv_path.name}")
            for r in rows]


# -- 3. one training step of each trainer ------------------------------------------------------

@contextmanager
def _timed_steps(module, device: torch.device, stamps: List[float]):
    """Patch ``module.run_steps`` so that every step's start is stamped (device drained first)."""
    real = module.run_steps

    def run_steps(step_fn, **kwargs):
        def stamped(step: int):
            common.synchronize(device)
            stamps.append(time.perf_counter())
            return step_fn(step)

        real(stamped, **kwargs)

    module.run_steps = run_steps
    try:
        yield
    finally:
        module.run_steps = real


def _write_photos(folder: Path, count: int, side: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, side // 8, side // 8, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
        img = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)[0]
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"p{i}.png")
    return folder


def _step_rows(args: argparse.Namespace, part: str, stamps: List[float], detail: str) -> List[dict]:
    steps = [b - a for a, b in zip(stamps, stamps[1:])][args.step_warmup:]  # the last step (save, validate) is not timed
    if not steps:
        return [_row(args.device, part, "step", "FAIL", detail=f"only {len(stamps)} steps ran")]
    med = common.median(steps)
    return [_row(args.device, part, "step", "OK", round(1000 * med, 1), "ms", f"median of {len(steps)}; {detail}")]


def run_enhance_step(args: argparse.Namespace, photos: Path, tmp: Path) -> List[dict]:
    import enhancement.train as enhance_train
    from attiqa_train.config import load_config
    from enhancement.config import EnhanceConfig
    from enhancement.demo import DEMO_OVERRIDES

    steps = args.step_warmup + args.step_repeats + 1
    crop, width = (32, 4) if args.quick else (256, 32)
    cfg = load_config(EnhanceConfig, None, [
        *DEMO_OVERRIDES, f"train.steps={steps}", "train.val_every=1000", "train.state_every=1000",
        "train.warmup_steps=1", f"data.crop_size={crop}", f"data.max_side={max(crop, 64)}", f"model.width={width}",
        *args.enhance_set], values={"data.train_dir": str(photos), "train.device": args.device})
    stamps: List[float] = []
    with _timed_steps(enhance_train, torch.device(args.device), stamps):
        enhance_train.train(cfg, tmp / "enhance")
    return _step_rows(args, "enhance_step", stamps,
                      f"batch {cfg.train.batch_size}, crop {cfg.data.crop_size}, U-Net width {cfg.model.width}, "
                      f"amp {cfg.train.amp}")


def run_pretrain_step(args: argparse.Namespace, photos: Path, tmp: Path) -> List[dict]:
    import pretrain.training.train as pretrain_train
    from attiqa_train.config import load_config
    from pretrain.training.config import PretrainConfig

    steps = args.step_warmup + args.step_repeats + 1
    backbone, crop, batch = ("test_resnet", 48, 8) if args.quick else (DEFAULT_BACKBONE, 192, 32)
    cfg = load_config(PretrainConfig, None, [
        f"train.steps={steps}", f"train.batch_size={batch}", "train.val_every=1000", "train.state_every=1000",
        "train.warmup_steps=1", f"model.backbone={backbone}", f"synthetic.crop={crop}", "synthetic.holdout_every=0",
        "val.max_images=0", f"train.device={args.device}", *args.pretrain_set])
    cfg.synthetic.images = [str(photos)]
    stamps: List[float] = []
    with _timed_steps(pretrain_train, torch.device(args.device), stamps):
        pretrain_train.train(cfg, tmp / "pretrain", progress=False)
    return _step_rows(args, "pretrain_step", stamps,
                      f"{cfg.model.backbone}, batch {cfg.train.batch_size}, crop {cfg.synthetic.crop}, "
                      f"amp {cfg.train.amp}")


# -- driver ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda",
                   help="cuda (default; every part is skipped when there is no GPU) or cpu (a plumbing check)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny models and inputs: a smoke run (seconds on a CPU)")
    p.add_argument("--out", type=Path, default=None, help="CSV path (default: benchmarks/results/gpu_check_<device>.csv)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all usable cores)")
    g = p.add_argument_group("tests")
    g.add_argument("--tests", nargs="+", default=["tests"], help="pytest paths (default: tests)")
    g.add_argument("--tests-k", default="cuda", help="pytest -k expression (default: cuda)")
    g.add_argument("--tests-timeout", type=float, default=180.0, help="seconds before the test run is stopped (default: 180)")
    g = p.add_argument_group("loss (passed to loss_cost.py)")
    g.add_argument("--precision", nargs="+", default=None,
                   help="default: fp32 fp32-cl bf16-cl on cuda, fp32 on cpu")
    g.add_argument("--backbones", nargs="+", default=None,
                   help=f"AttiqaLoss architectures (default: {DEFAULT_BACKBONE} resnet50; --quick: test_resnet)")
    g.add_argument("--clip-model", default="RN50")
    g.add_argument("--clip-config", type=Path, default=None)
    g.add_argument("--lpips-nets", nargs="+", default=None, help="default: alex vgg (--quick: alex)")
    g = p.add_argument_group("training steps")
    g.add_argument("--step-warmup", type=int, default=2, help="untimed first steps (default: 2)")
    g.add_argument("--step-repeats", type=int, default=5, help="timed steps (default: 5)")
    g.add_argument("--enhance-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra attiqa-enhance config override")
    g.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra attiqa-pretrain config override")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step_warmup < 0 or args.step_repeats < 1:
        raise ValueError("--step-warmup must be >= 0 and --step-repeats >= 1")
    cuda = args.device == "cuda"
    args.precision = args.precision or (["fp32", "fp32-cl", "bf16-cl"] if cuda else ["fp32"])
    args.backbones = args.backbones or (["test_resnet"] if args.quick else [DEFAULT_BACKBONE, "resnet50"])
    args.lpips_nets = args.lpips_nets or (["alex"] if args.quick else ["alex", "vgg"])
    device = torch.device(args.device)
    out = args.out or common.default_output("gpu_check", device)
    args.threads = common.set_threads(args.threads)
    rows: List[dict] = []
    if cuda and not torch.cuda.is_available():
        for part in args.parts:
            line = f"SKIP {part}: CUDA is not available here (torch.cuda.is_available() is False)"
            print(line)
            rows.append(_row("cuda", part, "-", "SKIP", detail="CUDA is not available"))
    else:
        print(f"# gpu_check on {common.machine_description(device)}")
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            photos = None
            if {"enhance_step", "pretrain_step"} & set(args.parts):
                photos = _write_photos(tmp / "photos", 6, 96 if args.quick else 320)
            for part in args.parts:
                t0 = time.perf_counter()
                print(f"== {part} ...", file=sys.stderr)
                try:
                    if part == "tests":
                        got = run_tests(args)
                    elif part == "loss":
                        got = run_loss(args, out)
                    elif part == "enhance_step":
                        got = run_enhance_step(args, photos, tmp)
                    else:
                        got = run_pretrain_step(args, photos, tmp)
                except Exception as exc:  # one broken part must not hide the others
                    got = [_row(args.device, part, "-", "FAIL", detail=f"{type(exc).__name__}: {exc}"[:300])]
                rows.extend(got)
                print(f"== {part}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    common.write_csv(out, rows, COLUMNS)
    print(common.format_table(rows, [c for c in COLUMNS if c != "device"]))
    print(f"wrote {out}")
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
