"""Task -> Result, the frame every executor shares: the task's times, and failures as rows, never a dead sweep."""

from __future__ import annotations

import time
import traceback
from typing import Callable

from mpibench.config import Config, MeasureConfig
from mpibench.inference.runner import Interrupted, scaled
from mpibench.placement import Placement
from mpibench.plan import Task
from mpibench.result import Result


class TaskExecutor:
    """Runs Tasks one after another where `placement` says; a subclass says how one is measured."""

    def __init__(self, cfg: Config, placement: Placement, should_stop: Callable[[], bool] = lambda: False):
        self.cfg, self.placement, self.should_stop = cfg, placement, should_stop

    def run(self, task: Task, measure: MeasureConfig | None = None,
            before_measure: Callable[[], None] | None = None) -> Result:
        """Measure a task by `measure` (default: the config's); failures come back as rows."""
        start = time.time()
        try:
            result = self.measure_task(task, measure or scaled(self.cfg.measure, task.time_scale), before_measure)
        except Exception as err:  # any failure is a row, never a dead sweep
            status, message = self.classify(err)
            result = Result.failure(task, status, self.placement.rank, self.placement.host, message)
        result.start_time, result.end_time = start, time.time()
        return result

    def measure_task(self, task: Task, measure: MeasureConfig,
                     before_measure: Callable[[], None] | None) -> Result:
        raise NotImplementedError

    def classify(self, err: Exception) -> tuple[str, str]:
        """A failure's status and message; subclasses name the failures they know."""
        if isinstance(err, Interrupted):
            return "interrupted", str(err)
        return "failed", f"{type(err).__name__}: {one_line(err)} [at {where(err)}]"

    def ok(self, task: Task, metrics: dict, **measured) -> Result:
        """A measured task's row, stamped with where it ran."""
        return Result(task, "ok", self.placement.rank, self.placement.host, metrics=metrics, **measured)

    def check_energy(self) -> str | None:
        """At start: can the energy backend read on every device this rank will use? (None: yes)"""
        return None

    def close(self) -> None:
        pass


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


def where(err: BaseException) -> str:
    """file:line where the error was raised, for the failure row."""
    tb = traceback.extract_tb(err.__traceback__)
    return f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
