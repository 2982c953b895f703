"""Energy meters behind one interface, and the factory that picks one for a device.

Stdlib only: ``pynvml`` and ``pyRAPL`` are imported by their meters when used, so the config,
planning and analysis code can import this package on any machine.
"""

from __future__ import annotations

import re

from .base import (
    Availability,
    DomainStatus,
    EnergyMeter,
    EnergyReading,
    EnergyUnavailable,
    IdlePower,
    Method,
    domain_kind,
    measure_idle,
)
from .null import DISABLED_REASON, NullMeter
from .nvml import NvmlMeter, gpu_domain
from .pyrapl import PyRaplMeter
from .rapl import DEFAULT_POWER_BOUND_W, RaplMeter

BACKENDS = ("auto", "rapl", "pyrapl", "nvml", "none")
_METHOD_RANK = {"none": 0, "counter": 1, "sampled": 2, "estimated": 3}

__all__ = [
    "BACKENDS", "Availability", "CompositeMeter", "DomainStatus", "EnergyMeter",
    "EnergyReading", "EnergyUnavailable", "IdlePower", "Method", "NullMeter", "NvmlMeter", "PyRaplMeter",
    "RaplMeter", "domain_kind", "make_meter", "measure_idle",
]


class CompositeMeter(EnergyMeter):
    """Several meters over one window (a GPU and its host CPU), read as one.

    The reading's method is the least exact one among the parts that read something.
    """

    def __init__(self, meters: list[EnergyMeter]) -> None:
        self.meters = tuple(meters)
        self.name = "+".join(m.name for m in self.meters)
        bad = [m for m in self.meters if not m.available().ok]
        self.cause = bad[0].cause if bad else None

    def available(self) -> Availability:
        parts = [m.available() for m in self.meters]
        bad = [a for a in parts if not a.ok]
        domains = tuple(d for a in parts for d in a.domains)
        reason = "; ".join(a.reason for a in parts)
        return Availability(not bad, bad[0].status if bad else "ok", reason, domains)

    def start(self) -> None:
        for meter in self.meters:
            meter.start()

    def stop(self) -> EnergyReading:
        readings = [m.stop() for m in reversed(self.meters)]  # reverse: the windows nest
        methods = [r.method for r in readings if r.method != "none"] or ["none"]
        return EnergyReading(
            joules={d: j for r in readings for d, j in r.joules.items()},
            status={d: s for r in readings for d, s in r.status.items()},
            window_s=max(r.window_s for r in readings),
            method=max(methods, key=_METHOD_RANK.__getitem__),
            reasons={d: why for r in readings for d, why in r.reasons.items()},
        )

    def trace(self) -> list[tuple[float, str, float]]:
        return sorted(sample for m in self.meters for sample in m.trace())

    def drain(self) -> list[tuple[float, str, float]]:
        return sorted(sample for m in self.meters for sample in m.drain())

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


def _is_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    if re.fullmatch(r"cuda(:\d+)?", device):
        return True
    raise ValueError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _null_like(meter: EnergyMeter, domain: str) -> NullMeter:
    """A meter that cannot read, replaced by a null meter that keeps its reason and cause."""
    availability = meter.available()
    meter.close()
    return NullMeter(availability.status, availability.reason, (domain,), cause=meter.cause)


def make_meter(
    backend: str = "auto",
    device: str = "cpu",
    *,
    powercap_root: str = "/sys/class/powercap",
    power_bound_w: float = DEFAULT_POWER_BOUND_W,
    gpu_uuid: str | None = None,
    pci_bus_id: str | None = None,
) -> EnergyMeter:
    """The meter for ``backend`` on ``device``: 'cpu', 'cuda' or 'cuda:N'.

    ``auto`` never fails: RAPL for a CPU (else a null meter saying why); for a GPU, NVML found by
    ``gpu_uuid`` / ``pci_bus_id`` plus RAPL for the host when readable. A backend named explicitly
    that cannot read raises EnergyUnavailable with the reason, chained to its cause.
    """
    if backend not in BACKENDS:
        raise ValueError(f"energy backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    is_gpu = _is_gpu(device)
    if backend == "none":  # no NvmlMeter here: --energy none must not open NVML
        return NullMeter("absent", DISABLED_REASON, (gpu_domain(gpu_uuid) if is_gpu else "cpu-package",))
    if backend != "auto":
        meter = _explicit(backend, powercap_root, power_bound_w, gpu_uuid, pci_bus_id)
        availability = meter.available()
        if not availability.ok:
            meter.close()
            raise EnergyUnavailable(f"--energy {backend}: {availability.reason}") from meter.cause
        return meter
    rapl = RaplMeter(powercap_root, power_bound_w=power_bound_w)
    if not is_gpu:
        return rapl if rapl.available().ok else _null_like(rapl, "cpu-package")
    nvml = NvmlMeter(gpu_uuid, pci_bus_id)
    gpu_part = nvml if nvml.available().ok else _null_like(nvml, nvml.domain)
    if not rapl.available().ok:
        rapl.close()
        return gpu_part
    return CompositeMeter([gpu_part, rapl])


def _explicit(backend: str, powercap_root: str, power_bound_w: float,
              gpu_uuid: str | None, pci_bus_id: str | None) -> EnergyMeter:
    if backend == "rapl":
        return RaplMeter(powercap_root, power_bound_w=power_bound_w)
    if backend == "pyrapl":
        return PyRaplMeter(powercap_root=powercap_root, power_bound_w=power_bound_w)
    return NvmlMeter(gpu_uuid, pci_bus_id)
