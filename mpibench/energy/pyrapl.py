"""The optional ``pyRAPL`` package behind the meter interface; ``rapl.py`` is the default.

pyRAPL (last released 2019) reads the same powercap counters once at ``begin()`` and once at ``end()``
and does not undo wrap-around: a counter that wrapped once gives a negative delta, or no list at all
(``pkg = None``) when every socket's delta is negative, and one that wrapped twice gives a plausible but
wrong number. So a domain is ``error`` (NaN, with the reason) when pyRAPL's value is missing or
negative, or when the window is longer than the time its counter takes to wrap at the power bound
(``max_energy_range_uj`` from the powercap tree): only shorter windows are known to hold at most one
wrap, which shows as a negative delta.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable

from .base import NAN, Availability, DomainStatus, EnergyMeter, EnergyReading
from .rapl import DEFAULT_POWER_BOUND_W, FALLBACK_RANGE_UJ, discover_zones, read_text

_NOTHING_TO_READ = "no RAPL package or DRAM counter it can read"
_PREFIXES = (("cpu-package", "pkg"), ("dram", "dram"))  # our domain prefix, pyRAPL's Result field


def _status_of(err: BaseException) -> DomainStatus:
    if isinstance(err, PermissionError):
        return "permission"
    if isinstance(err, (FileNotFoundError, AssertionError)) or "CantRecord" in type(err).__name__:
        return "absent"  # pyRAPL's "no RAPL device here", or a sysfs file it did not find
    return "error"


class PyRaplMeter(EnergyMeter):
    """Package and DRAM joules per socket from ``pyRAPL.Measurement``; method ``counter``.

    The domains are those pyRAPL read at setup; each is in every reading, NaN with a reason when
    pyRAPL's value cannot be trusted. ``powercap_root`` is only read for the counters' ranges (pyRAPL
    itself reads the real sysfs).
    """

    name = "pyrapl"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        powercap_root: str | os.PathLike = "/sys/class/powercap",
        power_bound_w: float = DEFAULT_POWER_BOUND_W,
        read: Callable[[str], str] = read_text,
    ) -> None:
        self._clock = clock
        self._pyrapl: Any = None
        self._measurement: Any = None
        self._t0: float | None = None
        self.domains: tuple[str, ...] = ()
        self.wrap_s: dict[str, float] = {}  # per domain: the shortest time its counter can take to wrap
        self._availability = self._setup()
        if self._availability.ok:
            self.wrap_s = _wrap_periods(os.fspath(powercap_root), self.domains, power_bound_w, read)

    def _setup(self) -> Availability:
        try:
            pyrapl = importlib.import_module("pyRAPL")
        except ImportError as err:
            self.cause = err
            return Availability(False, "absent", "pyRAPL is not installed (pip install pyRAPL)", ())
        try:
            pyrapl.setup()
            self.domains = _probe_domains(pyrapl)
        except Exception as err:  # pyRAPL raises its own classes and raw OSErrors from sysfs
            self.cause = err
            status = _status_of(err)
            detail = str(err) or (_NOTHING_TO_READ if status == "absent" else type(err).__name__)
            return Availability(False, status, f"pyRAPL.setup() failed: {detail}", ())
        if not self.domains:
            return Availability(False, "absent", f"pyRAPL read {_NOTHING_TO_READ} at setup", ())
        self._pyrapl = pyrapl
        return Availability(True, "ok", f"reads {', '.join(self.domains)} through pyRAPL", self.domains)

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
        for domain in self.domains:
            value_uj = _value_uj(result, domain)
            why = self._distrust(domain, value_uj, window_s)
            joules[domain], status[domain] = (NAN, "error") if why else (value_uj / 1e6, "ok")
            if why:
                reasons[domain] = f"{domain}: {why}"
        return EnergyReading(joules, status, window_s, "counter", reasons).stuck_checked()

    def _distrust(self, domain: str, value_uj: float | None, window_s: float) -> str:
        """Why pyRAPL's value for a domain cannot be trusted, or '' when it can."""
        if value_uj is None:
            return "pyRAPL gave no value (its delta was negative: the counter wrapped or was reset)"
        if value_uj < 0:
            return "negative delta from pyRAPL (the counter wrapped, which pyRAPL does not undo)"
        wrap_s = self.wrap_s.get(domain, 0.0)
        if window_s > wrap_s:
            return (f"the {window_s:.3g} s window is longer than the {wrap_s:.3g} s in which the counter can "
                    "wrap, so pyRAPL's delta may have lost whole wraps (use --energy rapl, which polls)")
        return ""


def _socket_values(result: Any, field: str) -> list:
    return list(getattr(result, field, None) or [])


def _probe_domains(pyrapl: Any) -> tuple[str, ...]:
    """The domains pyRAPL reads: a socket it does not monitor gives exactly -1, a device it has none of None.

    Any other value, even a negative one (a wrap inside the probe), is a counter it reads.
    """
    probe = pyrapl.Measurement("mpibench-probe")
    probe.begin()
    probe.end()
    return tuple(f"{prefix}-{socket}" for prefix, field in _PREFIXES
                 for socket, value in enumerate(_socket_values(probe.result, field)) if value != -1)


def _value_uj(result: Any, domain: str) -> float | None:
    """pyRAPL's delta for one of our domains, None when its list or its socket is missing."""
    prefix, socket = domain.rsplit("-", 1)
    values = _socket_values(result, dict(_PREFIXES)[prefix])
    return values[int(socket)] if int(socket) < len(values) else None


def _wrap_periods(root: str, domains: tuple[str, ...], power_bound_w: float,
                  read: Callable[[str], str]) -> dict[str, float]:
    """Per domain, the time its counter takes to wrap at the power bound; an unknown range counts as
    ``FALLBACK_RANGE_UJ``, as in ``rapl.py``."""
    try:
        ranges = {z.domain: z.range_uj for z in discover_zones(root, read)}
    except OSError:
        ranges = {}
    return {d: (ranges.get(d) or FALLBACK_RANGE_UJ) / 1e6 / power_bound_w for d in domains}
