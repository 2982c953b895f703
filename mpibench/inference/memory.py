"""Peak memory of one task: what the model and its inputs held at their highest.

On CUDA, the caching allocator's peak (`torch.cuda.max_memory_allocated`, reset when the task starts): the
weights and every activation alive at once. On CPU, the process's peak resident set during the task
(VmHWM, reset through /proc/self/clear_refs when the task starts) less its resident set before it built
its first model (Python, torch and the libraries): the weights, activations and buffers, comparable from
task to task whatever model the rank had cached. NaN where the kernel does not allow the reset.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

MIB = 1024 * 1024


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """VmHWM back to the current resident set (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """`start()` when a task starts, `stop()` when it ends: its peak memory in MiB (NaN: not measurable)."""

    def __init__(self):
        self.baseline_kib = _status_kib("VmRSS")  # before any model: the process itself
        self.device: torch.device | None = None
        self.resettable = False

    def start(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self.resettable = _reset_peak_rss()

    def stop(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        peak = _status_kib("VmHWM")
        if not self.resettable or peak is None or self.baseline_kib is None:
            return math.nan
        return max(0, peak - self.baseline_kib) / 1024
