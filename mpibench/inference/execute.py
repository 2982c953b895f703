"""Task -> Result on this process: build (or reuse) the model, measure, summarise; failures become data."""

from __future__ import annotations

import time
import traceback
from typing import Callable

import torch

from mpibench.config import Config, MeasureConfig
from mpibench.flops import distilbert_flops_per_sample
from mpibench.inference.model import (BuiltModel, InferenceWorkload, Unavailable, build_model,
                                      device_name)
from mpibench.inference.runner import Interrupted, Runner, scaled
from mpibench.inference.scenarios import run_scenario
from mpibench.inference.timers import CudaTimer
from mpibench.peak import mfu, peak_tflops
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stats import summarize


class Meters:
    """One energy meter per device on this rank, made on first use; counter samples go out once."""

    def __init__(self, backend: str):
        self.backend = backend
        self._meters: dict[str, object] = {}
        self._unix_offset = time.time() - time.monotonic()  # meters stamp samples with monotonic time

    def get(self, dev: torch.device):
        """The meter for a device; EnergyUnavailable when a backend named explicitly cannot read."""
        from mpibench.energy import make_meter

        key = str(dev)
        if key not in self._meters:
            ids = _gpu_ids(dev) if dev.type == "cuda" else {}
            self._meters[key] = make_meter(self.backend, "cuda" if dev.type == "cuda" else "cpu", **ids)
        return self._meters[key]

    def new_trace(self, dev: torch.device) -> list[tuple[float, str, float]]:
        """The samples since the last call, in Unix time; the meter drops them, so each goes out once."""
        fresh = self._meters[str(dev)].drain()
        return [(t + self._unix_offset, d, v) for t, d, v in fresh]

    def close(self) -> None:
        for m in self._meters.values():
            m.close()


def _gpu_ids(dev: torch.device) -> dict:
    """How NVML finds this GPU: its UUID and PCI bus id, never its index (indices get renumbered)."""
    p = torch.cuda.get_device_properties(dev)
    ids = {"gpu_uuid": str(p.uuid)} if getattr(p, "uuid", None) else {}
    if hasattr(p, "pci_bus_id"):
        ids["pci_bus_id"] = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
    return ids


class Executor:
    """Runs Tasks one after another on this rank, keeping the last models built."""

    def __init__(self, cfg: Config, rank: int, host: str, default_threads: int,
                 should_stop: Callable[[], bool] = lambda: False, cpu_exclusive: bool = False,
                 gpu_exclusive: bool = True, cores: str = "", gpu_index: int = 0, cache_size: int = 2):
        self.cfg, self.rank, self.host = cfg, rank, host
        self.default_threads = default_threads
        self.should_stop = should_stop
        self.meters = Meters(cfg.energy.backend)
        self.cpu_exclusive = cpu_exclusive  # this rank had its node's CPUs to itself
        self.gpu_exclusive = gpu_exclusive  # ... and its GPU
        self.cores, self.gpu_index = cores, gpu_index
        self._cache: dict[tuple, BuiltModel] = {}
        self.cache_size = cache_size

    def _model(self, task: Task) -> BuiltModel:
        key = (task.model, task.device, task.precision, task.backend, task.attention)
        if key not in self._cache:
            while len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            m = self.cfg.model
            self._cache[key] = build_model(task.model, m.num_labels, task.device, task.precision,
                                           self.cfg.seed, self.gpu_index, task.backend, task.attention)
        return self._cache[key]

    def run(self, task: Task, measure: MeasureConfig | None = None,
            before_measure: Callable[[], None] | None = None) -> Result:
        """Measure a task by `measure` (default: the config's); failures come back as rows."""
        start = time.time()
        try:
            result = self._measure(task, measure or scaled(self.cfg.measure, task.time_scale), before_measure)
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

    def _measure(self, task: Task, measure: MeasureConfig, before_measure) -> Result:
        threads = task.threads or self.default_threads
        torch.set_num_threads(threads)
        built = self._model(task)
        workload = InferenceWorkload(built, task.batch_size, task.seq_len, self.cfg.seed + task.task_id,
                                     ahead=measure.preprocess == "ahead")
        compile_s = _first_call_s(workload) if task.backend == "compile" else float("nan")
        timer = CudaTimer(built.device) if built.device.type == "cuda" else None
        meter = self.meters.get(built.device)

        def make_runner(m: MeasureConfig) -> Runner:
            return Runner(m, timer=timer, meter=meter, should_stop=self.should_stop)

        m, extra = run_scenario(task, workload, make_runner, measure, self.cfg.server,
                                self.cfg.seed + task.task_id, before_measure)
        stats = summarize(m.raw_ns, task.batch_size)
        flops = distilbert_flops_per_sample(task.seq_len, **built.arch)
        n_samples = m.energy_samples or m.n_iters * task.batch_size
        achieved = flops * stats["forward_throughput_sps"] / 1e12
        name = device_name(built.device)
        peak, peak_source = peak_tflops(name, task.precision, cpu_cores=threads)
        metrics = {
            **stats, **extra,
            "threads": threads, "weights": built.weights, "device_name": name,
            "bound_device": str(built.device), "cores": self.cores, "precision_mode": "cast",
            "preprocess_mode": measure.preprocess,
            "compile_s": compile_s,
            "converged": m.converged, "cold_ms": m.cold_ns / 1e6, "warmup_iters": m.warmup_iters,
            "measure_s": m.measure_s, "flops_per_sample": flops,
            "achieved_tflops": achieved, "peak_tflops": peak, "mfu": mfu(achieved, peak),
            "peak_source": peak_source,
        }
        metrics.update(m.energy.columns(n_samples, cpu_exclusive=self.cpu_exclusive,
                                        gpu_exclusive=self.gpu_exclusive))
        return Result(task, "ok", self.rank, self.host, metrics=metrics, raw_ns=m.raw_ns,
                      energy_trace=self.meters.new_trace(built.device))

    def check_energy(self) -> str | None:
        """At start: can the energy backend read on every device this rank will use? (None: yes)"""
        from mpibench.energy import EnergyUnavailable
        from mpibench.inference.model import resolve_device

        for device in self.cfg.sweep.devices:
            try:
                self.meters.get(resolve_device(device, self.gpu_index))
            except Unavailable:
                continue  # no such device here: its tasks become 'unavailable' rows
            except EnergyUnavailable as err:
                return f"rank {self.rank} on {self.host}: {err}"
        return None

    def close(self) -> None:
        self.meters.close()


def _first_call_s(workload: InferenceWorkload) -> float:
    """torch.compile compiles at the first call of a shape: time it apart from the warm-up."""
    t0 = time.perf_counter()
    workload.postprocess(workload.forward(workload.h2d(workload.preprocess(0))))
    return time.perf_counter() - t0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


def _where(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    return f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
