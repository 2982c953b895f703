"""A meter with nothing to read: every domain NaN with the reason, so a run goes on without counters."""

from __future__ import annotations

import time
from typing import Callable

from .base import NAN, Availability, DomainStatus, EnergyMeter, EnergyReading

DISABLED_REASON = "energy measurement disabled (--energy none)"


class NullMeter(EnergyMeter):
    """Reads nothing; still times its window, and names the domains it stands in for.

    ``domains`` are placeholders such as ``("cpu-package",)`` or ``("gpu-<uuid>",)`` so that a task's
    row knows which hardware went unread and why.
    """

    name = "none"

    def __init__(
        self,
        status: DomainStatus = "absent",
        reason: str = DISABLED_REASON,
        domains: tuple[str, ...] = ("cpu-package",),
        *,
        cause: BaseException | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._availability = Availability(ok=False, status=status, reason=reason, domains=())
        self._domains = domains
        self._clock = clock
        self._t0: float | None = None
        self.cause = cause

    def available(self) -> Availability:
        return self._availability

    def start(self) -> None:
        self._t0 = self._clock()

    def stop(self) -> EnergyReading:
        window_s = self._clock() - self._t0 if self._t0 is not None else NAN
        status = self._availability.status
        return EnergyReading(
            joules={d: NAN for d in self._domains},
            status={d: status for d in self._domains},
            window_s=window_s,
            method="none",
            reasons={d: self._availability.reason for d in self._domains},
        )
