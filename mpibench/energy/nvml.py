"""GPU energy from NVML (``nvidia-ml-py``): the total-energy counter on Volta and newer, sampled power before.

The GPU is found by UUID or PCI bus id, never by index: CUDA_VISIBLE_DEVICES renumbers devices for
CUDA but not for NVML. ``pynvml`` is imported inside the meter so that this module imports without it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from mpibench.hostinfo import text

from .base import NAN, Availability, DomainStatus, EnergyReading, Method, TracingMeter

DEFAULT_SAMPLE_INTERVAL_S = 0.025
_VOLTA = 5  # NVML_DEVICE_ARCH_VOLTA, the first architecture with the energy counter


def normalize_uuid(uuid: str | bytes) -> str:
    """'GPU-4B2C...' (NVML) and '4b2c...' (torch) compare equal."""
    return text(uuid).strip().lower().removeprefix("gpu-")


def gpu_domain(uuid: str | bytes | None) -> str:
    """The domain a GPU's joules go under: 'gpu-<uuid>', or 'gpu' while its UUID is unknown."""
    return f"gpu-{normalize_uuid(uuid)}" if uuid else "gpu"


def normalize_bus_id(bus_id: str | bytes) -> str:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00.0' (CUDA) both become '0000:3b:00.0'."""
    parts = text(bus_id).strip().lower().split(":")
    domain, bus, dev_fn = (["0"] + parts) if len(parts) == 2 else parts
    dev, _, fn = dev_fn.partition(".")
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{int(fn or '0', 16):x}"


def _bus_or_raw(bus_id: str | bytes) -> str:
    """A bus id NVML gave that does not parse still shows up, unmatched, in the reason."""
    try:
        return normalize_bus_id(bus_id)
    except ValueError:
        return text(bus_id)


def _not_supported(pynvml: Any, err: Exception) -> bool:
    codes = (pynvml.NVML_ERROR_NOT_SUPPORTED, getattr(pynvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13))
    return getattr(err, "value", None) in codes


class NvmlMeter(TracingMeter):
    """One GPU's energy over a window; method ``counter`` (mJ counter) or ``sampled`` (power, trapezoid).

    Sampling runs in a daemon thread only while a window is open. The trace holds counter values in J;
    on the sampled path the running power integral in J instead. ``clock`` and ``background`` let
    tests drive ``poll()`` by hand.
    """

    name = "nvml"

    def __init__(
        self,
        gpu_uuid: str | None = None,
        pci_bus_id: str | None = None,
        *,
        sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        super().__init__()
        self.sample_interval_s = sample_interval_s
        self._clock, self._background = clock, background
        self._nvml: Any = None
        self._handle: Any = None
        self.method: Method = "none"
        self.domain = gpu_domain(gpu_uuid)
        self._window_done = threading.Event()
        self._thread: threading.Thread | None = None
        self._cum_j = 0.0  # sampled path: the power integral over every window so far
        self._cum0_j = 0.0  # ... and its value when this window opened
        self._last: tuple[float, float] | None = None  # this window's last (time s, power W)
        self._t0: float | None = None
        self._e0_mj: int | None = None
        self._error = ""
        self._availability = self._open(gpu_uuid, pci_bus_id)

    def _unavailable(self, status: DomainStatus, reason: str, err: BaseException | None) -> Availability:
        self.cause = err
        return Availability(False, status, reason, ())

    def _open(self, gpu_uuid: str | None, pci_bus_id: str | None) -> Availability:
        try:
            import pynvml
        except ImportError as err:
            return self._unavailable("absent", "nvidia-ml-py is not installed (import pynvml failed)", err)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            return self._unavailable("absent", f"NVML could not be initialised: {err}", err)
        self._nvml = pynvml
        if not gpu_uuid and not pci_bus_id:
            reason = "no GPU UUID or PCI bus id given to find the NVML device"
            return self._unavailable("absent", reason, None)
        try:
            self._handle, seen = self._find(gpu_uuid, pci_bus_id)
            if self._handle is None:
                wanted = " / ".join(x for x in (gpu_uuid, pci_bus_id) if x)
                reason = f"no NVML device matches {wanted} (NVML sees: {', '.join(seen) or 'none'})"
                return self._unavailable("absent", reason, None)
            self.method = self._probe_method()
        except pynvml.NVMLError as err:
            return self._unavailable("error", f"NVML query failed: {err}", err)
        if self.method == "none":
            reason = f"{self.domain}: NVML reports neither the energy counter nor power usage"
            return self._unavailable("unsupported-gpu", reason, None)
        return Availability(True, "ok", f"reads {self.domain} by {self.method} NVML readings", (self.domain,))

    def _find(self, gpu_uuid: str | None, pci_bus_id: str | None) -> tuple[Any, list[str]]:
        """The handle whose UUID (preferred) or PCI bus id matches; also what NVML saw, for the reason."""
        nv = self._nvml
        want_uuid = normalize_uuid(gpu_uuid) if gpu_uuid else None
        want_bus = normalize_bus_id(pci_bus_id) if pci_bus_id else None
        by_bus, seen = None, []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = normalize_uuid(nv.nvmlDeviceGetUUID(handle))
            bus = _bus_or_raw(nv.nvmlDeviceGetPciInfo(handle).busId)
            seen.append(f"GPU-{uuid} at {bus}")
            if uuid == want_uuid:
                self.domain = f"gpu-{uuid}"
                return handle, seen
            if bus == want_bus and by_bus is None:
                by_bus = (handle, uuid)
        if by_bus is None:
            return None, seen
        self.domain = f"gpu-{by_bus[1]}"
        return by_bus[0], seen

    def _probe_method(self) -> Method:
        """``counter`` from Volta on, else ``sampled`` power, else ``none``; other NVML errors raise."""
        nv, handle = self._nvml, self._handle
        try:
            arch = nv.nvmlDeviceGetArchitecture(handle)
        except nv.NVMLError:
            arch = None  # old drivers lack the call: let the counter query decide
        if arch is None or arch >= getattr(nv, "NVML_DEVICE_ARCH_VOLTA", _VOLTA):
            try:
                nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                return "counter"
            except nv.NVMLError as err:
                if not _not_supported(nv, err):
                    raise
        try:
            nv.nvmlDeviceGetPowerUsage(handle)
            return "sampled"
        except nv.NVMLError as err:
            if not _not_supported(nv, err):
                raise
        return "none"

    def available(self) -> Availability:
        return self._availability

    def poll(self) -> None:
        """One reading: the counter (kept in the trace) or a power sample added to the window."""
        with self._lock:
            if self.method == "counter":
                self._read_counter_mj(self._clock())
            elif self.method == "sampled":
                self._sample_power(self._clock())

    def _sample_power(self, now: float) -> None:
        nv = self._nvml
        try:
            power_w = nv.nvmlDeviceGetPowerUsage(self._handle) / 1e3
        except nv.NVMLError as err:
            self._error = f"{self.domain}: NVML read failed during the window ({err})"
            return
        if self._last is not None:
            t_prev, p_prev = self._last
            self._cum_j += (now - t_prev) * (p_prev + power_w) / 2
        self._last = (now, power_w)
        self._record(now, self.domain, self._cum_j)

    def start(self) -> None:
        self._stop_sampler()  # a window started twice must not leave a sampler behind
        if not self._availability.ok:
            self._t0 = self._clock()
            return
        with self._lock:
            self._error, self._last = "", None
            self._t0 = self._clock()
            if self.method == "counter":
                self._e0_mj = self._read_counter_mj(self._t0)
            else:
                self._cum0_j = self._cum_j
                self._sample_power(self._t0)
        if self.method == "sampled" and self._background:
            self._window_done.clear()
            self._thread = threading.Thread(target=self._sample, name="mpibench-nvml-power", daemon=True)
            self._thread.start()

    def _read_counter_mj(self, now: float) -> int | None:
        try:
            energy_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError as err:
            self._error = f"{self.domain}: NVML read failed during the window ({err})"
            return None
        self._record(now, self.domain, energy_mj / 1e3)
        return energy_mj

    def _sample(self) -> None:
        while not self._window_done.wait(self.sample_interval_s):
            self.poll()

    def stop(self) -> EnergyReading:
        if self._t0 is None:
            raise RuntimeError("NvmlMeter.stop() without start()")
        if not self._availability.ok:
            window_s, self._t0 = self._clock() - self._t0, None
            a, d = self._availability, self.domain
            return EnergyReading({d: NAN}, {d: a.status}, window_s, "none", {d: a.reason})
        self._stop_sampler()
        with self._lock:
            t1 = self._clock()
            joules = self._window_joules(t1)
            window_s, self._t0 = t1 - self._t0, None
        d = self.domain
        if self._error or math.isnan(joules):
            reason = self._error or f"{d}: the NVML energy counter went back during the window"
            return EnergyReading({d: NAN}, {d: "error"}, window_s, self.method, {d: reason})
        return EnergyReading({d: joules}, {d: "ok"}, window_s, self.method).stuck_checked()

    def _window_joules(self, now: float) -> float:
        if self.method == "counter":
            e1_mj = self._read_counter_mj(now)
            if self._e0_mj is None or e1_mj is None or e1_mj < self._e0_mj:
                return NAN  # a counter that went back (driver reload) cannot be trusted
            return (e1_mj - self._e0_mj) / 1e3
        self._sample_power(now)
        return self._cum_j - self._cum0_j

    def _stop_sampler(self) -> None:
        self._window_done.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        self._stop_sampler()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # closing must not fail a run that measured fine
            self._nvml = None
