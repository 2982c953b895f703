"""The one energy-meter interface, its result types, and the attribution rules for a task's row."""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Literal

DomainStatus = Literal["ok", "absent", "permission", "masked", "unsupported-gpu", "error", "stuck"]
Method = Literal["counter", "sampled", "estimated", "none"]
NAN = float("nan")
STUCK_MIN_WINDOW_S = 0.5  # a live counter always moves over this long; 0 J then means it stands still


class EnergyUnavailable(Exception):
    """A backend the user named explicitly cannot read here; the message says why."""


@dataclass(frozen=True)
class Availability:
    """What this node can read, and if not, why (a typed status and a sentence)."""

    ok: bool
    status: DomainStatus
    reason: str
    domains: tuple[str, ...]


def domain_kind(domain: str) -> str:
    """'cpu', 'dram' or 'gpu': the part of a domain name before the first dash."""
    return domain.split("-", 1)[0]


@dataclass(frozen=True)
class EnergyReading:
    """Joules per domain over one window; NaN (never 0) where a domain could not be read."""

    joules: dict[str, float]
    status: dict[str, DomainStatus]
    window_s: float
    method: Method
    reasons: dict[str, str] = field(default_factory=dict)  # a sentence for each domain not "ok"

    def _kind_j(self, kind: str) -> float:
        values = [j for d, j in self.joules.items() if domain_kind(d) == kind]
        return math.fsum(values) if values else NAN  # one NaN makes the sum NaN

    @property
    def cpu_j(self) -> float:
        return self._kind_j("cpu")

    @property
    def dram_j(self) -> float:
        return self._kind_j("dram")

    @property
    def gpu_j(self) -> float:
        return self._kind_j("gpu")

    @property
    def total_j(self) -> float:
        return math.fsum(self.joules.values()) if self.joules else NAN

    def _first_bad(self, kinds: tuple[str, ...]) -> str | None:
        """The first domain of these kinds whose status is not ok, None if all are ok."""
        return next((d for d in sorted(self.status) if domain_kind(d) in kinds and self.status[d] != "ok"), None)

    def _reason(self, domain: str) -> str:
        return self.reasons.get(domain) or f"{domain}: {self.status[domain]}"

    def stuck_checked(self, min_window_s: float = STUCK_MIN_WINDOW_S) -> EnergyReading:
        """This reading with every ok domain that read exactly 0 J over a window of at least
        ``min_window_s`` turned into NaN and ``stuck``: a counter that never advances is not idle hardware."""
        if not self.window_s >= min_window_s:  # NaN windows too
            return self
        stuck = [d for d, j in self.joules.items() if j == 0 and self.status.get(d) == "ok"]
        if not stuck:
            return self
        why = (f"the counter did not advance over the {self.window_s:.3g} s window "
               "(a counter that stands still, as on some VMs, cannot tell energy)")
        return EnergyReading(
            joules={**self.joules, **{d: NAN for d in stuck}},
            status={**self.status, **{d: "stuck" for d in stuck}},
            window_s=self.window_s,
            method=self.method,
            reasons={**self.reasons, **{d: f"{d}: {why}" for d in stuck}},
        )

    def columns(self, n_samples: int, *, cpu_exclusive: bool, gpu_exclusive: bool = True) -> dict:
        """The task's energy columns, attributed by what each reading covers.

        RAPL reads whole packages and NVML a whole GPU, so a value is the task's own only when the
        task had that hardware to itself; otherwise it is the node-level value of the window and
        ``energy_status`` is ``shared``. An unreadable domain gives NaN and its reason.

        ``energy_j``: for a CPU task (no GPU domain) cpu + dram; for a GPU task the GPU plus the host
        cpu + dram when every host domain was read (else the GPU alone), because the host feeds the GPU
        and its energy belongs to the inference when it can be known.

        ``energy_reason`` is the sentence behind a status other than ``ok`` (empty when ok).
        """
        is_gpu_task = any(domain_kind(d) == "gpu" for d in self.status)
        host = tuple(k for k in ("cpu", "dram") if any(domain_kind(d) == k for d in self.status))
        host_read = bool(host) and self._first_bad(host) is None
        if is_gpu_task:
            bad_domain = self._first_bad(("gpu",))
            parts = ("gpu",) + (host if host_read else ())
        else:
            bad_domain = self._first_bad(host) if host else None
            parts = host
        if bad_domain:
            bad, reason = self.status[bad_domain], self._reason(bad_domain)
        elif not parts:
            bad, reason = "absent", "no energy domain was read"
        else:
            bad, reason = None, ""
        gpu_shared = is_gpu_task and not gpu_exclusive
        shared = gpu_shared or (not cpu_exclusive and host_read and "cpu" in parts)
        if shared and not bad:
            reason = (f"node-level reading: other ranks shared the {'GPU' if gpu_shared else 'CPU packages'} "
                      "in this window, so it is not this task's own energy")
        energy_j = NAN if bad else math.fsum(self._kind_j(k) for k in parts)
        return {
            "energy_j": energy_j,
            "energy_cpu_j": self.cpu_j,
            "energy_dram_j": self.dram_j,
            "energy_gpu_j": self.gpu_j,
            "j_per_sample": energy_j / n_samples if n_samples > 0 else NAN,
            "energy_status": bad or ("shared" if shared else "ok"),
            "energy_reason": reason,
            "energy_method": self.method,
        }


class EnergyMeter(ABC):
    """start() opens a window, stop() closes it and returns what was read; unavailability is data.

    ``cause`` holds the exception behind an unavailable status, so that a caller who asked for this
    backend by name can chain it. Used as a context manager, the meter is closed on exit.
    """

    name: str = "meter"
    cause: BaseException | None = None

    @abstractmethod
    def available(self) -> Availability: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> EnergyReading: ...

    def trace(self) -> list[tuple[float, str, float]]:
        """Raw samples (monotonic time s, domain, counter value in J) not yet drained."""
        return []

    def drain(self) -> list[tuple[float, str, float]]:
        """The samples trace() would give, handed out once and dropped, so memory stays bounded."""
        return []

    def close(self) -> None:
        """Release threads and handles; a closed meter is not started again."""

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TracingMeter(EnergyMeter):
    """A meter whose poller keeps raw samples; trace() and drain() read them under the poller's lock.

    Subclasses poll while holding ``self._lock`` and ``_record`` each sample inside it, so a drain
    never sees half a poll and hands every sample out once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trace: list[tuple[float, str, float]] = []

    def _record(self, t_s: float, domain: str, value_j: float) -> None:
        """Keep one sample; the caller holds ``self._lock``."""
        self._trace.append((t_s, domain, value_j))

    def trace(self) -> list[tuple[float, str, float]]:
        with self._lock:
            return list(self._trace)

    def drain(self) -> list[tuple[float, str, float]]:
        with self._lock:
            fresh, self._trace = self._trace, []
        return fresh


@dataclass(frozen=True)
class IdlePower:
    """A node's idle power per domain in W (NaN where unreadable), and its status with the reason.

    ``status`` is ``stuck`` when a counter the node could read stood still over the idle window, else
    that of the meter's availability.
    """

    watts: dict[str, float]
    status: DomainStatus
    reason: str


def measure_idle(
    meter: EnergyMeter, seconds: float, *, sleep: Callable[[float], None] = time.sleep
) -> IdlePower:
    """Idle power per domain, to subtract a node's baseline later; a counter that stands still is NaN."""
    meter.start()
    sleep(seconds)
    reading = meter.stop()
    window_s = reading.window_s
    watts = {d: (j / window_s if window_s > 0 else NAN) for d, j in reading.joules.items()}
    stuck = [d for d in sorted(reading.status) if reading.status[d] == "stuck"]
    if stuck:
        return IdlePower(watts, "stuck", "; ".join(reading._reason(d) for d in stuck))
    a = meter.available()
    return IdlePower(watts, a.status, "" if a.ok else a.reason)
