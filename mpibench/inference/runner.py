"""The profiled Runner: cold call, warm-up, then iterations until the median is known well enough."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from mpibench.config import MeasureConfig
from mpibench.inference.timers import CpuTimer
from mpibench.stats import PHASES, ci_relative_halfwidth


class Workload(Protocol):
    """One iteration in four phases; each returns what the next one takes."""

    def preprocess(self, i: int) -> Any: ...
    def h2d(self, x: Any) -> Any: ...
    def forward(self, x: Any) -> Any: ...
    def postprocess(self, y: Any) -> Any: ...

    def set_batch(self, k: int) -> None:
        """From now on, iterations take only the first k samples of a batch (the server's smaller batches)."""


class Interrupted(Exception):
    """The run was asked to stop (a signal reached the coordinator)."""


@dataclass
class Measurement:
    raw_ns: dict[str, np.ndarray]
    cold_ns: int
    warmup_iters: int
    measure_s: float
    converged: bool
    energy: Any = None  # an EnergyReading when a meter ran
    energy_samples: int | None = None  # samples served while the meter ran, where not n_iters x batch
    steps_ns: list[list[int]] | None = None  # generation: the measured iterations' steps, where a scenario chose them

    @property
    def n_iters(self) -> int:
        return len(self.raw_ns[PHASES[0]])


def scaled(m: MeasureConfig, factor: float) -> MeasureConfig:
    """The same rules with `factor` times the measuring time (--optimal's short and long stages)."""
    if factor == 1.0:
        return m
    return m.model_copy(update={"min_time_s": m.min_time_s * factor, "max_time_s": m.max_time_s * factor})


@dataclass
class EnergyWindow:
    reading: Any = None  # the meter's EnergyReading once the window closed (None without a meter)


@contextmanager
def energy_window(meter) -> Iterator[EnergyWindow]:
    """The one place a meter's window opens and closes (on errors too); no meter, no window."""
    window = EnergyWindow()
    if meter is None:
        yield window
        return
    meter.start()
    try:
        yield window
    finally:
        window.reading = meter.stop()


class Runner:
    """Measures a Workload by the rules of a MeasureConfig.

    The timer and the wall clock are parameters so that tests can drive the runner with a fake clock
    and check every statistic exactly; the meter (if any) brackets the measured iterations only.
    """

    def __init__(self, measure: MeasureConfig, timer=None, clock: Callable[[], int] = time.perf_counter_ns,
                 meter=None, should_stop: Callable[[], bool] = lambda: False):
        self.m = measure
        self.clock = clock
        self.timer = timer or CpuTimer(clock)
        self.meter = meter
        self.should_stop = should_stop

    def adjusted(self, metered: bool = True, **rules) -> "Runner":
        """The same instruments under other rules (`metered=False`: outside any energy window)."""
        return Runner(self.m.model_copy(update=rules), self.timer, self.clock,
                      self.meter if metered else None, self.should_stop)

    def iteration(self, w: Workload, i: int) -> list[int]:
        """One iteration, timed phase by phase (ns)."""
        t = self.timer
        t.start()
        x = w.preprocess(i)
        t.mark()
        x = w.h2d(x)
        t.mark()
        y = w.forward(x)
        t.mark()
        w.postprocess(y)
        t.mark()
        return t.stop()

    def run(self, w: Workload, before_measure: Callable[[], None] | None = None) -> Measurement:
        """Cold call, warm-up, then measure; `before_measure` runs in between (scaling aligns
        the ranks' windows there)."""
        cold_ns = sum(self.iteration(w, 0))
        warmup_iters = self.warm_up(w)
        if before_measure is not None:
            before_measure()
        with energy_window(self.meter) as window:
            start = self.clock()
            samples, converged = self.measure(w, warmup_iters + 1, start)
            measure_s = (self.clock() - start) / 1e9
        arr = np.asarray(samples, dtype=np.int64).reshape(-1, len(PHASES))
        raw = {p: arr[:, k].copy() for k, p in enumerate(PHASES)}
        return Measurement(raw, cold_ns, warmup_iters, measure_s, converged, window.reading)

    def warm_up(self, w: Workload) -> int:
        """At least warmup_iters iterations and warmup_s seconds, but never past max_time_s; returns
        how many ran."""
        m, i, t0 = self.m, 1, self.clock()
        while i <= m.warmup_iters or (self.clock() - t0) < m.warmup_s * 1e9:
            if self.clock() - t0 >= m.max_time_s * 1e9:
                break
            self.check_stop()
            self.iteration(w, i)
            i += 1
        return i - 1

    def measure(self, w: Workload, i: int, start: int) -> tuple[list[list[int]], bool]:
        """Iterations from number i until the median is known well enough (converged) or max_time_s."""
        m, samples = self.m, []
        next_check = m.min_iters
        while True:
            self.check_stop()
            samples.append(self.iteration(w, i))
            i += 1
            elapsed_s = (self.clock() - start) / 1e9
            n = len(samples)
            if n >= next_check and elapsed_s >= m.min_time_s:
                e2e = np.fromiter((sum(s) for s in samples), dtype=np.float64, count=n)
                if ci_relative_halfwidth(e2e) <= m.target_ci:
                    return samples, True
                next_check = max(n + 1, math.ceil(n * 1.05))  # keeps all checks O(n log n)
            if elapsed_s >= m.max_time_s:
                return samples, False

    def check_stop(self) -> None:
        if why := self.should_stop():
            raise Interrupted(f"stopped by {why if isinstance(why, str) else 'a stop request'}")
