"""The GEMM peak a device reaches: TFLOP/s of a square matmul per precision, measured once at start.

mpibench.peak says what a device could do (datasheet, or cores x clock x instruction set); this says
what it does with the BLAS torch calls, a denominator that MFU can actually approach. A node's leader
measures it while the other ranks wait. torch is imported only when measuring.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

#: Precisions a GEMM is measured in, and their torch dtypes.
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: The matrix grows (doubling from MIN_N) until one call takes CALL_S, up to MAX_N per device type.
CALL_S = 0.01
MIN_N = 256
MAX_N = {"cpu": 4096, "cuda": 16384}
#: Timed calls after the warm-up call; the fastest one counts.
REPEATS = 10
#: Seconds one device and precision may take, growth and repeats included.
CAP_S = 2.0
#: Seconds a child process may take to import torch and create its GPU contexts.
CHILD_START_S = 120.0


@dataclass(frozen=True)
class GemmPlan:
    """What a node's leader measures: the sweep's devices (cpu, cuda, cuda:N) and precisions."""

    devices: tuple[str, ...]
    precisions: tuple[str, ...]


def best_tflops(make: Callable[[int], Callable[[], None]], *, max_n: int = MAX_N["cpu"], min_n: int = MIN_N,
                call_s: float = CALL_S, repeats: int = REPEATS, cap_s: float = CAP_S,
                stop: Callable[[], object] = lambda: None,
                clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Best TFLOP/s of an n x n matmul; `make(n)` gives a function that runs one and waits for it.

    n doubles from `min_n` until a call takes `call_s` (looked at twice: one preempted call must not end
    the growth), reaches `max_n`, or the next size would not fit the cap; then up to `repeats` timed calls
    while the cap allows. The figure is the fastest rate of any call, so a size where every call was
    preempted cannot drag it down. None when the device cannot run it (`make` or the call raises at the
    smallest size), when one call of the smallest size outlasts the cap, or when a stop request came first.
    """
    deadline = clock() + cap_s
    best = 0.0  # TFLOP/s

    def timed(run: Callable[[], None], n: int) -> float:
        nonlocal best
        t0 = clock()
        run()
        took = clock() - t0
        best = max(best, 2 * n ** 3 / took / 1e12 if took > 0 else 0.0)
        return took

    n, run, took = 0, None, math.inf
    size = min_n
    while size <= max_n and not stop():
        try:
            candidate = make(size)
            t = timed(candidate, size)
            if t >= call_s and clock() + t <= deadline:
                t = min(t, timed(candidate, size))
        except Exception:  # not implemented for this dtype here, or out of memory: keep the last size
            break
        if run is None and clock() > deadline:
            return None  # absurdly slow: one call of the smallest size took longer than the cap
        n, run, took = size, candidate, t
        if took >= call_s or clock() + 8 * took * (repeats + 1) > deadline:  # 8: twice the size
            break
        size *= 2
    for _ in range(repeats):
        if run is None or stop() or clock() + took > deadline:
            break
        try:
            took = timed(run, n)
        except Exception:  # the device failed meanwhile: what was timed still stands
            break
    return best or None


def matmul_at(device: str, precision: str) -> Callable[[int], Callable[[], None]]:
    """make(n) for best_tflops: random n x n operands on the device; a call is one matmul, synchronised."""
    import torch

    dev, dtype = torch.device(device), getattr(torch, DTYPES[precision])
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def make(n: int) -> Callable[[], None]:
        gen = torch.Generator(device=dev).manual_seed(n)
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
        c = torch.empty_like(a)
        sync()

        def run() -> None:
            torch.matmul(a, b, out=c)
            sync()
        return run
    return make


def gemm_peaks(plan: GemmPlan, stop: Callable[[], object] = lambda: None, cap_s: float = CAP_S) -> dict:
    """{device: {precision: TFLOP/s or None}} for this node: `cpu` with the threads of this process's
    cores (`threads` says how many), and `cuda:i` for every GPU this node's processes see when the plan
    has one. GPUs are measured in a child process: the CUDA contexts it creates end with it, so a GPU in
    exclusive-process mode stays free for the rank that will measure on it."""
    precisions = [p for p in plan.precisions if p in DTYPES]
    out: dict[str, dict] = {}
    if "cpu" in plan.devices:
        out["cpu"] = measure_device("cpu", precisions, stop, cap_s)
    if any(d.startswith("cuda") for d in plan.devices):
        out.update(_gpus_in_child(precisions, stop, cap_s))
    return out


def measure_device(device: str, precisions: list[str], stop: Callable[[], object] = lambda: None,
                   cap_s: float = CAP_S) -> dict:
    """One device's {precision: TFLOP/s or None} (and `threads` for the CPU)."""
    import torch

    kind = device.split(":")[0]
    entry: dict = {}
    before = torch.get_num_threads()
    if kind == "cpu":
        entry["threads"] = len(os.sched_getaffinity(0))
        torch.set_num_threads(entry["threads"])
    try:
        usable = _start(torch, device)
        for p in precisions:
            tflops = best_tflops(matmul_at(device, p), max_n=MAX_N[kind], cap_s=cap_s, stop=stop) if usable else None
            entry[p] = None if tflops is None else float(f"{tflops:.4g}")
    finally:
        torch.set_num_threads(before)
    return entry


def _gpus_in_child(precisions: list[str], stop: Callable[[], object], cap_s: float) -> dict:
    """Every visible GPU measured by `python -m mpibench.gemm`; {} when the child fails or a stop comes."""
    import json
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "mpibench.gemm", json.dumps(precisions), str(cap_s)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + CHILD_START_S + cap_s * len(precisions) * 16  # 16 GPUs a node at most
    while child.poll() is None:
        if stop() or time.monotonic() > deadline:
            child.kill()
            child.wait()
            return {}
        time.sleep(0.05)
    try:
        return json.loads(child.stdout.read() or "{}") if child.returncode == 0 else {}
    except ValueError:
        return {}


def _main(argv: list[str]) -> None:
    """The child: every visible GPU's figures as one JSON line on stdout."""
    import json

    import torch

    precisions, cap_s = json.loads(argv[0]), float(argv[1])
    print(json.dumps({f"cuda:{i}": measure_device(f"cuda:{i}", precisions, cap_s=cap_s)
                      for i in range(torch.cuda.device_count())}))


def _start(torch, device: str) -> bool:
    """Create the device's context and BLAS handle before the clock runs (seconds on a GPU, paid once);
    False when the device cannot even do that (its figures are then null)."""
    try:
        x = torch.ones(8, 8, device=device)
        torch.matmul(x, x)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
    except Exception:  # a GPU that is busy in exclusive mode, or broken: the run goes on without its peak
        return False
    return True


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
