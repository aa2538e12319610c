"""One loss step (forward + backward to the input) and what it costs: FLOPs, seconds, peak
memory; used by ``benchmarks/loss_cost.py``. ``method`` objects need a ``name``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from benchmarks import _common as common
from benchmarks._memory import peak_memory_mib

__all__ = ["make_step", "make_input", "count_flops", "measure_speed", "measure_memory_here"]


def make_step(module: nn.Module, images: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    """One training-loss step: forward, backward to a fresh leaf copy of ``images``."""
    autocast = precision == "bf16-cl"

    def step() -> torch.Tensor:
        x = images.detach().requires_grad_(True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = module(x)
        loss.backward()
        return x.grad

    return step


def make_input(batch: int, size: int, device: torch.device, precision: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(size)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last) if precision.endswith("-cl") else x


def _check_grad(grad: Optional[torch.Tensor], name: str) -> None:
    if grad is None or not bool(torch.isfinite(grad).all()):
        raise RuntimeError(f"{name}: the gradient did not reach the input or is not finite")


def _warm_up(step: Callable[[], torch.Tensor], n: int, name: str) -> None:
    for _ in range(n):
        _check_grad(step(), name)


def count_flops(step: Callable[[], torch.Tensor], name: str) -> float:
    """FLOPs of one forward + backward step as counted by ``torch.utils.flop_counter`` (matmuls, convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        grad = step()
    _check_grad(grad, name)
    return float(counter.get_total_flops())


def measure_speed(
    modules: Dict[Any, nn.Module], args: argparse.Namespace, device: torch.device, precision: str
) -> Tuple[Dict[Tuple[Any, int], List[float]], Dict[Tuple[Any, int], float]]:
    """Seconds per step for every (method, size), methods alternating within each repeat,
    and FLOPs per step (counted during the first, untimed warm-up step)."""
    from tqdm import tqdm

    times: Dict[Tuple[Any, int], List[float]] = {}
    flops: Dict[Tuple[Any, int], float] = {}
    methods = list(modules)
    total = len(args.sizes) * len(methods) * (max(args.warmup, 1) + args.repeats)
    with tqdm(total=total, desc=f"timing {precision}", file=sys.stderr, disable=args.no_progress) as bar:
        for size in args.sizes:
            x = make_input(args.batch, size, device, precision)
            steps = {m: make_step(modules[m], x, precision) for m in methods}
            for m in methods:
                bar.set_postfix_str(f"warm-up {m.name} {size}px")
                flops[(m, size)] = count_flops(steps[m], m.name)
                _warm_up(steps[m], args.warmup - 1, m.name)
                bar.update(max(args.warmup, 1))
            for rep in range(args.repeats):
                # Rotate the order so no method always follows the same (cache-cooling) neighbour.
                for m in methods[rep % len(methods):] + methods[: rep % len(methods)]:
                    bar.set_postfix_str(f"{m.name} {size}px")
                    times.setdefault((m, size), []).append(common.time_call(steps[m], device))
                    bar.update(1)
    return times, flops


def measure_memory_here(
    method: Any, module: nn.Module, args: argparse.Namespace, device: torch.device, precision: str
) -> Dict[int, Tuple[float, str]]:
    """Peak memory per size of one method in this process (one warm-up step first)."""
    out = {}
    for size in args.sizes:
        x = make_input(args.batch, size, device, precision)
        step = make_step(module, x, precision)
        _warm_up(step, 1, method.name)
        out[size] = peak_memory_mib(step, device)
        del x, step
    return out
