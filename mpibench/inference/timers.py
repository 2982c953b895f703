"""Phase timers: perf_counter_ns on CPU, CUDA events on GPU (one synchronise per iteration)."""

from __future__ import annotations

import time
from typing import Callable


class CpuTimer:
    """Marks phase boundaries with a clock (swappable: tests pass a seeded fake)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self.clock = clock
        self._marks: list[int] = []

    def start(self) -> None:
        self._marks = [self.clock()]

    def mark(self) -> None:
        self._marks.append(self.clock())

    def stop(self) -> list[int]:
        m = self._marks
        return [b - a for a, b in zip(m, m[1:])]


class CudaTimer:
    """CUDA events at phase boundaries on the current stream; synchronised once, in stop()."""

    def __init__(self, device, n_phases: int = 4):
        import torch

        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(n_phases + 1)]
        self._i = 0
        self._device = device

    def start(self) -> None:
        self._i = 0
        self.mark()

    def mark(self) -> None:
        self._events[self._i].record()
        self._i += 1

    def stop(self) -> list[int]:
        ev = self._events
        ev[self._i - 1].synchronize()
        return [int(a.elapsed_time(b) * 1e6) for a, b in zip(ev[: self._i], ev[1 : self._i])]
