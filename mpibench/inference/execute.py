"""Task -> Result on this process: build (or reuse) the model, measure, summarise; failures become data."""

from __future__ import annotations

import time
import traceback
from typing import Callable

import torch

from mpibench.config import Config
from mpibench.flops import distilbert_flops_per_sample
from mpibench.inference.model import (BuiltModel, InferenceWorkload, Unavailable, build_model,
                                      device_name)
from mpibench.inference.runner import Interrupted, Runner
from mpibench.inference.timers import CudaTimer
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stats import summarize

_NAN = float("nan")
NO_ENERGY = {"energy_j": _NAN, "energy_cpu_j": _NAN, "energy_dram_j": _NAN, "energy_gpu_j": _NAN,
             "j_per_sample": _NAN, "energy_status": "unavailable", "energy_method": "none"}


class Executor:
    """Runs Tasks one after another on this rank, keeping the last models built."""

    def __init__(self, cfg: Config, rank: int, host: str, default_threads: int,
                 should_stop: Callable[[], bool] = lambda: False, meter_factory=None,
                 cpu_exclusive: bool = False, cores: str = "", gpu_index: int = 0, cache_size: int = 2):
        self.cfg, self.rank, self.host = cfg, rank, host
        self.default_threads = default_threads
        self.should_stop = should_stop
        self.meter_factory = meter_factory  # device -> EnergyMeter, or None
        self.cpu_exclusive = cpu_exclusive  # this rank had its node's CPUs to itself
        self.cores, self.gpu_index = cores, gpu_index
        self._cache: dict[tuple, BuiltModel] = {}
        self.cache_size = cache_size

    def _model(self, task: Task) -> BuiltModel:
        key = (task.model, task.device, task.precision)
        if key not in self._cache:
            while len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            m = self.cfg.model
            self._cache[key] = build_model(task.model, m.num_labels, task.device, task.precision,
                                           self.cfg.seed, self.gpu_index)
        return self._cache[key]

    def run(self, task: Task) -> Result:
        start = time.time()
        try:
            result = self._measure(task)
        except Interrupted as err:
            result = Result.failure(task, "interrupted", self.rank, self.host, str(err))
        except Unavailable as err:
            result = Result.failure(task, "unavailable", self.rank, self.host, str(err))
        except torch.cuda.OutOfMemoryError as err:
            result = Result.failure(task, "oom", self.rank, self.host, _one_line(err))
        except Exception as err:  # any failure is a row, never a dead sweep
            result = Result.failure(task, "failed", self.rank, self.host,
                                    f"{type(err).__name__}: {_one_line(err)} "
                                    f"[at {_where(err)}]")
        result.start_time, result.end_time = start, time.time()
        return result

    def _measure(self, task: Task) -> Result:
        threads = task.threads or self.default_threads
        torch.set_num_threads(threads)
        built = self._model(task)
        workload = InferenceWorkload(built, task.batch_size, task.seq_len, self.cfg.seed + task.task_id)
        timer = CudaTimer(built.device) if built.device.type == "cuda" else None
        meter = self.meter_factory(task.device) if self.meter_factory else None
        runner = Runner(self.cfg.measure, timer=timer, meter=meter, should_stop=self.should_stop)
        m = runner.run(workload)
        stats = summarize(m.raw_ns, task.batch_size)
        flops = distilbert_flops_per_sample(task.seq_len, **built.arch)
        metrics = {
            **stats, **NO_ENERGY,
            "threads": threads, "weights": built.weights, "device_name": device_name(built.device),
            "bound_device": str(built.device), "cores": self.cores,
            "converged": m.converged, "cold_ms": m.cold_ns / 1e6, "warmup_iters": m.warmup_iters,
            "measure_s": m.measure_s, "flops_per_sample": flops,
            "achieved_tflops": flops * stats["forward_throughput_sps"] / 1e12,
        }
        if m.energy is not None:
            metrics.update(m.energy.columns(m.n_iters * task.batch_size, cpu_exclusive=self.cpu_exclusive))
        return Result(task, "ok", self.rank, self.host, metrics=metrics, raw_ns=m.raw_ns)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


def _where(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    return f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
