"""The optional ``pyRAPL`` package behind the meter interface; ``rapl.py`` is the default.

pyRAPL (last released 2019) reads the same powercap counters but does not undo wrap-around: a
counter that wrapped inside the window gives a negative delta, reported here as ``error`` (NaN).
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable

from .base import NAN, Availability, DomainStatus, EnergyMeter, EnergyReading

_NOTHING_TO_READ = "no RAPL package or DRAM counter it can read"


def _status_of(err: BaseException) -> DomainStatus:
    if isinstance(err, PermissionError):
        return "permission"
    if isinstance(err, (FileNotFoundError, AssertionError)) or "CantRecord" in type(err).__name__:
        return "absent"  # pyRAPL's "no RAPL device here", or a sysfs file it did not find
    return "error"


class PyRaplMeter(EnergyMeter):
    """Package and DRAM joules per socket from ``pyRAPL.Measurement``; method ``counter``."""

    name = "pyrapl"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pyrapl: Any = None
        self._measurement: Any = None
        self._t0: float | None = None
        self._availability = self._setup()

    def _setup(self) -> Availability:
        try:
            pyrapl = importlib.import_module("pyRAPL")
        except ImportError as err:
            self.cause = err
            return Availability(False, "absent", "pyRAPL is not installed (pip install pyRAPL)", ())
        try:
            pyrapl.setup()
        except Exception as err:  # pyRAPL raises its own classes and raw OSErrors from sysfs
            self.cause = err
            status = _status_of(err)
            detail = str(err) or (_NOTHING_TO_READ if status == "absent" else type(err).__name__)
            return Availability(False, status, f"pyRAPL.setup() failed: {detail}", ())
        self._pyrapl = pyrapl
        return Availability(True, "ok", "reads the RAPL package and DRAM counters through pyRAPL", ())

    def available(self) -> Availability:
        return self._availability

    def start(self) -> None:
        self._t0 = self._clock()
        if self._pyrapl is not None:
            self._measurement = self._pyrapl.Measurement("mpibench")
            self._measurement.begin()

    def stop(self) -> EnergyReading:
        if self._t0 is None:
            raise RuntimeError("PyRaplMeter.stop() without start()")
        if self._measurement is None:
            window_s, self._t0 = self._clock() - self._t0, None
            a = self._availability
            return EnergyReading({"cpu-package": NAN}, {"cpu-package": a.status}, window_s, "none",
                                 {"cpu-package": a.reason})
        self._measurement.end()
        window_s, self._t0 = self._clock() - self._t0, None
        result, self._measurement = self._measurement.result, None
        joules, status, reasons = {}, {}, {}
        for prefix, per_socket_uj in (("cpu-package", result.pkg), ("dram", result.dram)):
            for socket, value_uj in enumerate(per_socket_uj or []):
                domain = f"{prefix}-{socket}"
                ok = value_uj >= 0  # -1 marks an unmonitored socket; below 0 also means a wrap
                joules[domain], status[domain] = (value_uj / 1e6, "ok") if ok else (NAN, "error")
                if not ok:
                    reasons[domain] = f"{domain}: negative delta from pyRAPL (counter wrapped?)"
        return EnergyReading(joules, status, window_s, "counter", reasons)
