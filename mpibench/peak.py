"""Peak FLOP/s of the device a task ran on, and the fraction of it the model reached (MFU).

Plain data and functions, no torch: GPUs from a table of datasheet figures, CPUs estimated from
cores x clock x FLOPs per cycle of the widest instruction set the flags show. Unknown hardware gives
NaN with the reason, never a guess. Beside them, the GEMM peak each node measured at start
(mpibench.gemm, in /hosts) and the MFU against it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path

from mpibench.hostinfo import cpu_model

NAN = math.nan

# Vendor datasheet peaks in TFLOP/s, dense (the "with sparsity" figures halved). fp32 is the plain
# (non-tensor) FP32 figure; tf32, bf16 and fp16 are tensor-core figures with FP32 accumulate.
# A precision a GPU lacks is absent. First match wins, so more specific names come first.
GPU_PEAKS: list[tuple[str, str, dict[str, float]]] = [
    (r"V100S", "Tesla V100S PCIe", {"fp32": 16.4, "fp16": 130.0}),
    (r"V100.*PCIE", "Tesla V100 PCIe", {"fp32": 14.0, "fp16": 112.0}),
    (r"V100", "Tesla V100 SXM2", {"fp32": 15.7, "fp16": 125.0}),
    (r"A100", "A100 (SXM or PCIe, 40/80 GB)",
     {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"H100.*NVL", "H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H100.*PCIe", "H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"H100", "H100 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (r"H200.*NVL", "H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H200", "H200 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (r"\bL4\b", "L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"L40S", "L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    (r"\bL40\b", "L40", {"fp32": 90.5, "tf32": 90.5, "bf16": 181.05, "fp16": 181.05}),
    (r"\bT4\b", "Tesla T4", {"fp32": 8.1, "fp16": 65.0}),
    (r"\bA10\b", "A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    (r"RTX 4090", "GeForce RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
]
# Vendor datasheet memory bandwidth in GB/s (the fraction decode reaches of it: `mbu`); as GPU_PEAKS.
GPU_BANDWIDTH: list[tuple[str, str, float]] = [
    (r"V100", "Tesla V100 (HBM2)", 900.0),
    (r"A100.*80GB.*PCIe|A100.*PCIe.*80GB", "A100 80GB PCIe", 1935.0),
    (r"A100.*80GB", "A100 80GB SXM", 2039.0),
    (r"A100", "A100 40GB", 1555.0),
    (r"H100.*NVL", "H100 NVL", 3938.0),
    (r"H100.*PCIe", "H100 PCIe", 2039.0),
    (r"H100", "H100 SXM", 3352.0),
    (r"H200", "H200 (SXM and NVL)", 4800.0),
    (r"\bL4\b", "L4", 300.0),
    (r"L40S|\bL40\b", "L40/L40S", 864.0),
    (r"\bT4\b", "Tesla T4", 320.0),
    (r"\bA10\b", "A10", 600.0),
    (r"RTX 4090", "GeForce RTX 4090", 1008.0),
]
_GPU_WORDS = re.compile(r"NVIDIA|Tesla|GeForce|Quadro|Instinct|Radeon|\bGPU\b", re.IGNORECASE)

# FLOPs per cycle per core, widest first: (flags that must all be present, FLOP/cycle, label).
# AVX-512 assumes two 512-bit FMA units: parts with one, and AMD Zen 4 (which splits 512-bit
# operations in two), reach half. An FMA counts as 2 FLOPs.
_FP32 = [({"avx512f"}, 64, "avx512f, 2 FMA units"), ({"avx2", "fma"}, 32, "avx2+fma"),
         ({"avx"}, 16, "avx"), ({"sse2"}, 8, "sse2")]
_NATIVE = {
    "bf16": [({"amx_bf16", "amx_tile"}, 1024, "amx_bf16"), ({"avx512_bf16"}, 128, "avx512_bf16")],
    "fp16": [({"amx_fp16", "amx_tile"}, 1024, "amx_fp16"), ({"avx512_fp16"}, 128, "avx512_fp16")],
}


def peak_tflops(device_name: str, precision: str, *, cpu_cores: int | None = None,
                cpu_flags: set[str] | None = None, cpu_ghz: float | None = None) -> tuple[float, str]:
    """(peak TFLOP/s or NaN, where it comes from or why it is unknown) for a device and precision.

    A GPU is looked up by its name; anything else is taken as a CPU and estimated from the cores the
    task ran on (default: this process's affinity), the clock and the flags (default: this host's).
    """
    if (row := _datasheet(GPU_PEAKS, device_name)) is not None:
        label, peaks = row
        if precision not in peaks:
            return NAN, f"no {precision} peak for {label} (datasheet has none)"
        kind = "non-tensor" if precision == "fp32" else "dense tensor-core"
        return peaks[precision], f"datasheet: {label} {precision} {kind}"
    if _GPU_WORDS.search(device_name):
        return NAN, f"unknown GPU {device_name!r}: no datasheet peak in mpibench.peak"
    return _cpu_peak(precision, cpu_cores, cpu_flags, cpu_ghz)


def _cpu_peak(precision: str, cores: int | None, flags: set[str] | None,
              ghz: float | None) -> tuple[float, str]:
    info = cpu_info() if flags is None or ghz is None else {}
    flags = info["flags"] if flags is None else flags
    ghz = info["ghz"] if ghz is None else ghz
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    per_cycle = flops_per_cycle(precision, flags)
    if per_cycle is None:
        return NAN, f"no known {precision} FLOP/cycle for this CPU's instruction set"
    if not ghz or not math.isfinite(ghz):
        return NAN, "no CPU clock: /proc/cpuinfo has no 'cpu MHz' and cpufreq/cpuinfo_max_freq is missing"
    k, isa = per_cycle
    return (cores * ghz * 1e9 * k / 1e12,
            f"estimate: {cores} cores x {ghz:.2f} GHz x {k} FLOP/cycle ({isa})")


def flops_per_cycle(precision: str, flags: set[str]) -> tuple[int, str] | None:
    """Per-core FLOPs per cycle for a precision; bf16/fp16 without native units run at the fp32 rate."""
    if precision not in ("fp32", "bf16", "fp16"):
        return None
    for need, k, isa in _NATIVE.get(precision, []):
        if need <= flags:
            return k, isa
    for need, k, isa in _FP32:
        if need <= flags:
            return k, isa if precision == "fp32" else f"{isa}, {precision} at the fp32 rate"
    return None


def peak_bandwidth_gbs(device_name: str) -> tuple[float, str]:
    """(the datasheet memory bandwidth in GB/s or NaN, where it comes from or why it is unknown)."""
    if (row := _datasheet(GPU_BANDWIDTH, device_name)) is not None:
        label, gbs = row
        return gbs, f"datasheet: {label}"
    if _GPU_WORDS.search(device_name):
        return NAN, f"unknown GPU {device_name!r}: no datasheet bandwidth in mpibench.peak"
    return NAN, "CPU: no stated memory bandwidth (it depends on the channels populated)"


def _datasheet(table: list[tuple], device_name: str) -> tuple | None:
    """(label, figures) of the first row of a GPU table whose pattern the device name matches, or None."""
    return next(((label, figures) for pattern, label, figures in table
                 if re.search(pattern, device_name, re.IGNORECASE)), None)


def mfu(achieved_tflops: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved over peak, NaN when the peak is unknown."""
    if not peak or not math.isfinite(peak) or not math.isfinite(achieved_tflops):
        return NAN
    return achieved_tflops / peak


def measured_peak(gemm: dict, device: str, precision: str, threads: int | None) -> float:
    """The GEMM TFLOP/s a node measured for a task's device (as bound: cpu, cuda:i) and precision, NaN
    when unknown. A CPU figure is scaled to the task's threads, as the estimate is to its cores."""
    entry = gemm.get(device) if isinstance(gemm, dict) else None
    value = entry.get(precision) if isinstance(entry, dict) else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return NAN
    if device != "cpu":
        return float(value)
    measured_with = entry.get("threads")
    if not isinstance(measured_with, int) or measured_with <= 0 or not threads or threads <= 0:
        return NAN
    return value * threads / measured_with


def gemm_by_host(host_rows: list[dict]) -> dict[str, dict]:
    """host -> its measured GEMM peaks (the /hosts `gemm_tflops` JSON); unreadable ones are left out."""
    out = {}
    for h in host_rows:
        try:
            out[h["host"]] = json.loads(h.get("gemm_tflops") or "{}")
        except (KeyError, TypeError, ValueError):
            continue
    return out


def mfu_measured(row: dict, gemm: dict[str, dict]) -> float:
    """A /tasks row's achieved_tflops over its node's measured GEMM peak (gemm: from gemm_by_host)."""
    peak = measured_peak(gemm.get(row.get("host"), {}), str(row.get("bound_device", "")),
                         str(row.get("precision", "")), row.get("threads"))
    return mfu(float(row.get("achieved_tflops", NAN)), peak)


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """Model name, flags and clock of this host's CPUs (the clock: cpufreq max, else 'cpu MHz')."""
    flags: frozenset[str] = frozenset()
    mhz = NAN
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            elif key == "cpu MHz" and math.isnan(mhz):
                mhz = float(value)
    except (OSError, ValueError):
        pass
    try:  # kHz; the nominal "cpu MHz" may be a throttled snapshot on bare metal
        max_mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        max_mhz = NAN
    best = max_mhz if math.isfinite(max_mhz) else mhz
    return {"model_name": cpu_model(), "flags": flags, "mhz": mhz, "max_mhz": max_mhz,
            "ghz": best / 1e3}
