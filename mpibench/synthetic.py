"""The `synthetic` model: phases that sleep for a known time, no torch.

It lets the coordinator, the file and the stopping rule be tested and measured on their own, with
many ranks on few cores: a forward pass "takes" batch_size x seq_len microseconds (tokenising 5 %
of that), spent sleeping so that ranks sharing a core do not disturb each other.
"""

from __future__ import annotations

import time

from mpibench.config import MeasureConfig
from mpibench.inference.frame import TaskExecutor
from mpibench.inference.runner import Runner
from mpibench.inference.scenarios import run_scenario
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stats import summarize

NAME = "synthetic"


def forward_s(task: Task) -> float:
    return task.batch_size * task.seq_len * 1e-6


class SyntheticWorkload:
    def __init__(self, task: Task):
        self.per_sample_s = forward_s(task) / task.batch_size
        self.k = task.batch_size

    def set_batch(self, k: int) -> None:
        self.k = k

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


class SyntheticExecutor(TaskExecutor):
    """Task -> Result with the real Runner and statistics over a sleeping workload."""

    def measure_task(self, task: Task, measure: MeasureConfig, before_measure) -> Result:
        runner = Runner(measure, should_stop=self.should_stop)
        m, extra = run_scenario(task, SyntheticWorkload(task), runner, self.cfg.server,
                                self.cfg.seed + task.task_id, before_measure)
        metrics = {**summarize(m.raw_ns, task.batch_size, m.measure_s), **extra, "threads": task.threads or 1,
                   "weights": NAME, "device_name": NAME, "bound_device": NAME, "cores": self.placement.cores,
                   "converged": m.converged, "cold_ms": m.cold_ns / 1e6,
                   "warmup_iters": m.warmup_iters, "measure_s": m.measure_s,
                   "energy_status": "absent", "energy_method": "none",
                   "peak_source": "synthetic model: no FLOPs"}
        return self.ok(task, metrics, raw_ns=m.raw_ns)
