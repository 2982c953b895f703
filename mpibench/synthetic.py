"""The `synthetic` model: phases that sleep for a known time, no torch.

It lets the coordinator, the file and the stopping rule be tested and measured on their own, with
many ranks on few cores: a forward pass "takes" batch_size x seq_len microseconds (tokenising 5 %
of that), spent sleeping so that ranks sharing a core do not disturb each other.
"""

from __future__ import annotations

import time
from typing import Callable

from mpibench.config import Config, MeasureConfig
from mpibench.inference.runner import Interrupted, Runner, scaled
from mpibench.inference.scenarios import run_scenario
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stats import summarize

NAME = "synthetic"
_NAN = float("nan")


def forward_s(task: Task) -> float:
    return task.batch_size * task.seq_len * 1e-6


class SyntheticWorkload:
    def __init__(self, task: Task):
        self.per_sample_s = forward_s(task) / task.batch_size
        self.k = task.batch_size

    @property
    def fwd(self) -> float:
        return self.per_sample_s * self.k

    def preprocess(self, i):
        time.sleep(self.fwd * 0.05)
        return i

    def h2d(self, x):
        return x

    def forward(self, x):
        time.sleep(self.fwd)
        return x

    def postprocess(self, y):
        return y


class SyntheticExecutor:
    """Task -> Result with the real Runner and statistics over a sleeping workload."""

    def __init__(self, cfg: Config, rank: int, host: str, should_stop: Callable[[], bool] = lambda: False,
                 cores: str = ""):
        self.cfg, self.rank, self.host, self.should_stop, self.cores = cfg, rank, host, should_stop, cores

    def run(self, task: Task, measure: MeasureConfig | None = None,
            before_measure: Callable[[], None] | None = None) -> Result:
        start = time.time()
        try:
            def make_runner(mc):
                return Runner(mc, should_stop=self.should_stop)

            m, extra = run_scenario(task, SyntheticWorkload(task), make_runner,
                                    measure or scaled(self.cfg.measure, task.time_scale),
                                    self.cfg.server, self.cfg.seed + task.task_id, before_measure)
            metrics = {**summarize(m.raw_ns, task.batch_size), **extra, "threads": task.threads or 1,
                       "weights": NAME, "device_name": NAME, "bound_device": NAME, "cores": self.cores,
                       "converged": m.converged, "cold_ms": m.cold_ns / 1e6,
                       "warmup_iters": m.warmup_iters, "measure_s": m.measure_s,
                       "energy_status": "absent", "energy_method": "none",
                       "peak_source": "synthetic model: no FLOPs"}
            result = Result(task, "ok", self.rank, self.host, metrics=metrics, raw_ns=m.raw_ns)
        except Interrupted as err:
            result = Result.failure(task, "interrupted", self.rank, self.host, str(err))
        result.start_time, result.end_time = start, time.time()
        return result

    def check_energy(self) -> str | None:
        return None

    def close(self) -> None:
        pass
