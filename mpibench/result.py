"""What a worker sends back for one Task: status, metrics and the raw per-iteration times."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mpibench.plan import Task

STATUSES = ("ok", "failed", "oom", "unavailable", "interrupted")


@dataclass
class Result:
    task: Task
    status: str
    rank: int
    host: str
    message: str = ""
    metrics: dict = field(default_factory=dict)
    raw_ns: dict[str, np.ndarray] | None = None
    energy_trace: list[tuple[float, str, float]] | None = None  # (Unix time s, domain, counter J)
    start_time: float = field(default_factory=time.time)
    end_time: float = field(default_factory=time.time)

    def row(self) -> dict:
        """The /tasks row: task parameters, where it ran, how it went, what was measured."""
        t = self.task
        return {
            "task_id": t.task_id, "model": t.model, "device": t.device, "precision": t.precision,
            "batch_size": t.batch_size, "seq_len": t.seq_len, "threads": t.threads,
            "scenario": t.scenario, "backend": t.backend, "attention": t.attention, "rate_sps": t.rate_sps,
            "stage": t.stage,
            "rank": self.rank, "host": self.host, "status": self.status, "message": self.message,
            "start_time": self.start_time, "end_time": self.end_time,
            **self.metrics,
        }

    @classmethod
    def failure(cls, task: Task, status: str, rank: int, host: str, message: str) -> "Result":
        return cls(task, status, rank, host, message=f"rank {rank} on {host}: {message}")
