"""Facts about this host, read without MPI or torch."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def nvml_gpus() -> list[dict]:
    """GPUs through NVML when it is installed (no torch needed on the coordinator)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: a CPU node
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append({"name": text(pynvml.nvmlDeviceGetName(h)), "uuid": text(pynvml.nvmlDeviceGetUUID(h)),
                        "memory_gib": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30})
        return out
    finally:
        pynvml.nvmlShutdown()


def text(v) -> str:
    """A string from what NVML returns: bytes from old bindings, str from new ones."""
    return v.decode() if isinstance(v, bytes) else str(v)
