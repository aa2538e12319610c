"""Helpers shared by the benchmark scripts: devices, threads, timing, CSV and tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import torch

from attiqa_train import files

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def set_threads(threads: Optional[int]) -> int:
    """Fix the intra-op thread count (``None`` = all cores this process may use) and return it."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call, with the device drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine_description(device: torch.device) -> str:
    """One line naming the CPU (or GPU), the thread count and the torch version."""
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = _cpu_model() or platform.processor() or platform.machine()
    return f"{hw}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def default_output(name: str, device: torch.device) -> Path:
    return RESULTS_DIR / f"{name}_{device.type}.csv"


def write_csv(path: Path, rows: List[Mapping[str, object]], columns: Sequence[str]) -> None:
    """Write ``rows`` (only ``columns``, in that order) atomically: readers never see half a file."""
    files.write_csv(path, rows, columns, fmt=_fmt)


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def format_table(rows: List[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table (markdown-compatible pipes) of ``rows``."""
    cells = [[str(_fmt(r.get(c, ""))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(list(columns)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def iqr(values: Sequence[float]) -> float:
    """Interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(q3 - q1)
