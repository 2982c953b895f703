"""Task -> Result on this process: build (or reuse) the model, measure, summarise; failures become data."""

from __future__ import annotations

import time
from typing import Callable

import torch

from mpibench.config import Config, MeasureConfig
from mpibench.architecture import decode_bytes_per_token, forward_flops_per_sample, generate_flops_per_sample
from mpibench.inference.frame import TaskExecutor, one_line
from mpibench.inference.generate import GenerateWorkload, generation_metrics
from mpibench.inference.model import (DTYPES, BuiltModel, InferenceWorkload, Unavailable, build_model,
                                      device_name, resolve_device)
from mpibench.inference.memory import PeakMemory
from mpibench.inference.runner import Measurement, Runner
from mpibench.inference.scenarios import run_scenario
from mpibench.inference.timers import CudaTimer
from mpibench.peak import mfu, peak_bandwidth_gbs, peak_tflops
from mpibench.placement import Placement
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


class Executor(TaskExecutor):
    """Measures Tasks with torch on this rank, keeping the last models built."""

    cache_size = 2  # models kept built between tasks

    def __init__(self, cfg: Config, placement: Placement, should_stop: Callable[[], bool] = lambda: False):
        super().__init__(cfg, placement, should_stop)
        self.meters = Meters(cfg.energy.backend)
        self._cache: dict[tuple, BuiltModel] = {}
        self.memory = PeakMemory()  # its baseline: this process before any model

    def _model(self, task: Task) -> BuiltModel:
        key = (task.model, task.device, task.precision, task.backend, task.attention, task.workload)
        if key not in self._cache:
            while len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self._cache[key] = build_model(task.model, self.cfg.model.num_labels, task.device, task.precision,
                                           self.cfg.seed, self.placement.gpu_index, task.backend, task.attention,
                                           task.workload)
        return self._cache[key]

    def classify(self, err: Exception) -> tuple[str, str]:
        if isinstance(err, Unavailable):
            return "unavailable", str(err)
        if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
            return "oom", one_line(err) or type(err).__name__
        return super().classify(err)

    def measure_task(self, task: Task, measure: MeasureConfig, before_measure) -> Result:
        threads = task.threads or self.placement.threads
        torch.set_num_threads(threads)
        self.memory.start(resolve_device(task.device, self.placement.gpu_index))
        built = self._model(task)
        seed = self.cfg.seed + task.task_id
        ahead = measure.preprocess == "ahead"
        if task.workload == "generate":
            workload = GenerateWorkload(built, task.batch_size, task.seq_len, seed, self.cfg.sweep.max_new_tokens,
                                        ahead=ahead)
        else:
            workload = InferenceWorkload(built, task.batch_size, task.seq_len, seed, ahead=ahead)
        compile_s = _first_call_s(workload) if task.backend == "compile" else float("nan")
        timer = CudaTimer(built.device) if built.device.type == "cuda" else None
        runner = Runner(measure, timer=timer, meter=self.meters.get(built.device), should_stop=self.should_stop)
        m, extra = run_scenario(task, workload, runner, self.cfg.server, seed, before_measure)
        if task.workload == "generate":  # the server's batches, else the last iterations the workload ran
            m.steps_ns = workload.steps[-m.n_iters:] if m.steps_ns is None else m.steps_ns
        metrics = self._metrics(task, built, m, threads, extra,
                                {"preprocess_mode": measure.preprocess, "compile_s": compile_s,
                                 "peak_memory_mib": self.memory.stop()})
        return self.ok(task, metrics, raw_ns=m.raw_ns, energy_trace=self.meters.new_trace(built.device))

    def _metrics(self, task: Task, built: BuiltModel, m: Measurement, threads: int, extra: dict,
                 how: dict) -> dict:
        """Statistics, FLOP/s against the device's peak, and the energy this rank may call its own."""
        stats = summarize(m.raw_ns, task.batch_size, m.measure_s)
        name = device_name(built.device)
        if task.workload == "generate":
            new = self.cfg.sweep.max_new_tokens
            flops = generate_flops_per_sample(task.seq_len, new, built.shape)
            stats.update(generation_metrics(m.steps_ns, m.raw_ns, stats, task.batch_size, task.seq_len, new))
            stats.update(decode_bandwidth(task, built, name, stats["tpot_mean_ms"], new))
        else:
            flops = forward_flops_per_sample(task.seq_len, built.shape, self.cfg.model.num_labels)
        stats.update(extra)  # a scenario's own figures win
        achieved = flops * stats["forward_throughput_sps"] / 1e12  # a server's: of the batches it ran
        peak, peak_source = peak_tflops(name, task.precision, cpu_cores=threads)
        p = self.placement
        energy = m.energy.columns(m.energy_samples or m.n_iters * task.batch_size,
                                  cpu_exclusive=p.cpu_exclusive, gpu_exclusive=p.gpu_exclusive)
        if task.workload == "generate":
            energy["j_per_token"] = energy.get("j_per_sample", float("nan")) / self.cfg.sweep.max_new_tokens
        return {
            **stats,
            "threads": threads, "weights": built.weights, "architecture": built.architecture,
            "n_params": built.n_params, "tokenizer": built.tokenizer.kind, "device_name": name,
            "bound_device": str(built.device), "cores": p.cores, "precision_mode": "cast", **how,
            "converged": m.converged, "cold_ms": m.cold_ns / 1e6, "warmup_iters": m.warmup_iters,
            "measure_s": m.measure_s, "flops_per_sample": flops,
            "achieved_tflops": achieved, "peak_tflops": peak, "mfu": mfu(achieved, peak),
            "peak_source": peak_source, **energy,
        }

    def check_energy(self) -> str | None:
        from mpibench.energy import EnergyUnavailable

        for device in self.cfg.sweep.devices:
            try:
                self.meters.get(resolve_device(device, self.placement.gpu_index))
            except Unavailable:
                continue  # no such device here: its tasks become 'unavailable' rows
            except EnergyUnavailable as err:
                return f"rank {self.placement.rank} on {self.placement.host}: {err}"
        return None

    def close(self) -> None:
        self.meters.close()


def decode_bandwidth(task: Task, built: BuiltModel, device: str, tpot_ms: float, new_tokens: int) -> dict:
    """Generation's memory traffic: bytes read per generated token, the bandwidth the decode steps reached
    (a step reads the weights once and each sequence's KV cache) and its fraction of the datasheet peak."""
    per_token = decode_bytes_per_token(task.seq_len, new_tokens, built.shape,
                                       torch.finfo(DTYPES[task.precision]).bits // 8, task.batch_size)
    gbs = per_token * task.batch_size / (tpot_ms / 1e3) / 1e9 if tpot_ms > 0 else float("nan")
    peak, source = peak_bandwidth_gbs(device)
    return {"decode_bytes_per_token": per_token, "decode_gbs": gbs, "bandwidth_peak_gbs": peak,
            "bandwidth_source": source, "mbu": gbs / peak if peak > 0 else float("nan")}


def _first_call_s(workload: InferenceWorkload) -> float:
    """torch.compile compiles at the first call of a shape: time it apart from the warm-up."""
    t0 = time.perf_counter()
    workload.postprocess(workload.forward(workload.h2d(workload.preprocess(0))))
    return time.perf_counter() - t0
