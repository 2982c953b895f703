"""Synthetic run files: a latency model with noise and tails, for tests, the scale benchmark and demos.

The numbers are made up but shaped like real ones (a fixed overhead plus work per sample, bf16 slower on
CPUs without AMX, GPUs flat until they fill); statistics come from `mpibench.stats.summarize`, exactly
as a real run computes them, so every analysis path sees a file it could meet in practice.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mpibench.stats import PHASES, summarize
from mpibench.store import Store

CPU_NAME = "Intel(R) Xeon(R) Platinum 8480+"
GPU_NAME = "NVIDIA H100 80GB HBM3"


def phase_means_ms(device: str, precision: str, batch_size: int, seq_len: int) -> dict[str, float]:
    work = batch_size * seq_len / 128  # in units of one 128-token sample
    if device == "cpu":
        forward = 1.5 + 4.0 * work / (1 + 0.6 * math.log2(batch_size)) ** 0.5
        forward *= {"fp32": 1.0, "bf16": 1.3, "fp16": 1.6}.get(precision, 1.0)
        h2d = 0.004
    else:
        forward = max(0.9, 0.06 * work) * {"fp32": 1.0, "bf16": 0.55, "fp16": 0.55}.get(precision, 1.0)
        h2d = 0.02 + 0.002 * work
    return {"preprocess": 0.03 + 0.22 * work, "h2d": h2d, "forward": forward,
            "postprocess": 0.01 + 0.002 * batch_size}


def sample_raw(means_ms: dict[str, float], n: int, rng: np.random.Generator, noise: float = 0.04,
               tail: float = 0.01) -> dict[str, np.ndarray]:
    """n iterations per phase in ns: lognormal noise, and a rare slow iteration (tail) in the forward pass."""
    out = {}
    for p in PHASES:
        x = means_ms[p] * rng.lognormal(0.0, noise, n)
        if p == "forward":
            x *= np.where(rng.random(n) < tail, rng.uniform(1.5, 3.0, n), 1.0)
        out[p] = np.maximum(1, (x * 1e6)).astype(np.int64)
    return out


def task_row(task_id: int, cfg: dict, raw: dict[str, np.ndarray] | None, *, status: str = "ok",
             converged: bool = True, power_w: float | None = None, host: str = "node001", rank: int = 1,
             message: str = "") -> dict:
    """A /tasks row as the runner would write it (energy from a constant power where power_w is given)."""
    row = {"task_id": task_id, **cfg, "rank": rank, "host": host, "status": status, "message": message,
           "weights": "random-init", "device_name": CPU_NAME if cfg["device"] == "cpu" else GPU_NAME,
           "energy_status": "unavailable", "energy_method": "none", "start_time": 1.7e9 + task_id,
           "end_time": 1.7e9 + task_id + 1}
    if status != "ok" or raw is None:
        return row
    stats = summarize(raw, cfg["batch_size"])
    row.update(stats, converged=converged, cold_ms=stats["e2e_max_ms"] * 3, warmup_iters=10,
               measure_s=stats["n_iters"] * stats["e2e_mean_ms"] / 1e3, flops_per_sample=1e10,
               achieved_tflops=1e10 * stats["forward_throughput_sps"] / 1e12)
    if power_w is not None:
        energy = power_w * row["measure_s"]
        row.update(energy_j=energy, j_per_sample=energy / (stats["n_iters"] * cfg["batch_size"]),
                   energy_status="ok", energy_method="counter",
                   **({"energy_cpu_j": energy} if cfg["device"] == "cpu" else {"energy_gpu_j": energy}))
    return row


def hosts(n: int, gpus: int = 0) -> list[dict]:
    gpu_list = "[" + ", ".join(f'{{"name": "{GPU_NAME}", "uuid": "GPU-{i}", "memory_gib": 80}}'
                               for i in range(gpus)) + "]"
    return [{"host": f"node{i + 1:03d}", "cpu_model": CPU_NAME, "cores": 112, "memory_gib": 1007.0,
             "gpus": gpu_list, "ranks": ",".join(str(i * 4 + k) for k in range(4))} for i in range(n)]


def attrs(world_size: int = 4, **extra) -> dict:
    return {"config_yaml": "", "command_line": "python -m mpibench.run --config synthetic.yaml",
            "start_time": "2026-01-01T00:00:00+0000", "world_size": world_size,
            "n_workers": max(1, world_size - 1), "mpi_library_version": "Open MPI v5.0.11",
            "package_versions": '{"python": "3.11", "mpibench": "0.1.0"}', **extra}


def write(path: Path, rows: list[tuple[dict, dict | None]], *, n_hosts: int = 1, gpus: int = 0,
          complete: bool = True, overwrite: bool = True, **extra_attrs) -> Path:
    """A run file from (row, raw) pairs, appended exactly as a real run appends them."""
    store = Store.create(Path(path), attrs(**extra_attrs), hosts(n_hosts, gpus), overwrite=overwrite)
    for row, raw in rows:
        store.append(row, raw)
    if complete:
        store.close()
    else:  # what a killed job leaves: committed rows, `complete` false, no end time
        store.commit()
        store.f.close()
        store.f = None
    return Path(path)


def sweep(devices=("cpu",), precisions=("fp32", "bf16"), batch_sizes=(1, 2, 4, 8, 16), seq_len: int = 128,
          threads: int = 4, model: str = "distilbert-base-uncased", n: int = 300, seed: int = 0,
          slowdown: dict[tuple, float] | None = None, power_w: float | None = None,
          converged: bool = True) -> list[tuple[dict, dict]]:
    """Every (device, precision, batch size) of a sweep as (row, raw); `slowdown` scales chosen
    configurations' forward pass, keyed by (device, precision, batch_size); `converged` is every row's."""
    rng = np.random.default_rng(seed)
    out = []
    for device in devices:
        for prec in precisions:
            for bs in batch_sizes:
                cfg = {"model": model, "device": device, "precision": prec, "batch_size": bs, "seq_len": seq_len,
                       "threads": threads}
                means = phase_means_ms(device, prec, bs, seq_len)
                means["forward"] *= (slowdown or {}).get((device, prec, bs), 1.0)
                raw = sample_raw(means, n, rng)
                out.append((task_row(len(out), cfg, raw, power_w=power_w, converged=converged), raw))
    return out
