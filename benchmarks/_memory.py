"""Peak memory of one call: CUDA allocator statistics, or resident-set growth on CPU.

CPU method: after the caller's warm-up, ``malloc_trim(0)`` hands freed heap pages back
to the OS, the current RSS is the baseline, the kernel's RSS high-water mark (VmHWM) is
reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), the call runs, and
the peak is ``VmHWM - baseline``. Where the mark cannot be reset, ``ru_maxrss`` (the
process's lifetime peak) is used instead, which is only meaningful in a fresh process
whose set-up used less memory than the call; the returned label says which was used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
from typing import Callable, Tuple

import torch

__all__ = ["peak_memory_mib", "CUDA_LABEL", "RSS_LABEL", "MAXRSS_LABEL"]

CUDA_LABEL = "cuda_max_memory_allocated"
RSS_LABEL = "rss_hwm_growth"
MAXRSS_LABEL = "ru_maxrss_growth"
_MIB = 1024.0 * 1024.0


def peak_memory_mib(call: Callable[[], object], device: torch.device) -> Tuple[float, str]:
    """Extra memory (MiB) at the peak of ``call()`` over what was in use before it, and how it was measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / _MIB, CUDA_LABEL
    if not os.path.exists("/proc/self/statm"):
        raise RuntimeError("CPU peak memory is read from Linux /proc/self, which this system lacks; use --memory none")
    _malloc_trim()
    before = _rss_bytes()
    if _reset_hwm():
        call()
        return (_status_kib("VmHWM") * 1024 - before) / _MIB, RSS_LABEL
    call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / _MIB, MAXRSS_LABEL


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to trim
            pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
