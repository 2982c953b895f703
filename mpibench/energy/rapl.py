"""CPU package and DRAM energy from Linux powercap RAPL counters, wrap-around included.

The ``energy_uj`` counters wrap at ``max_energy_range_uj`` (minutes at full power on big parts), so a
daemon thread polls often enough that at most one wrap can fall between two polls, and the meter adds
up the deltas. Zones are ``<root>/intel-rapl:N`` (``name``: ``package-N`` or ``package-N-die-M``) with
subzones ``intel-rapl:N:M``; only the ``dram`` subzones are reported, since ``core`` and ``uncore`` are
already inside the package.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .base import NAN, Availability, DomainStatus, EnergyReading, TracingMeter

FALLBACK_RANGE_UJ = 2**32  # only to size the poll period when max_energy_range_uj is missing
MIN_POLL_S, MAX_POLL_S = 0.05, 60.0
DEFAULT_POWER_BOUND_W = 1000.0  # above what any single package or DRAM domain draws
_PACKAGE = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE = re.compile(r"^intel-rapl:(\d+):(\d+)$")


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def counter_delta_uj(prev_uj: int, now_uj: int, range_uj: int | None) -> int | None:
    """Energy between two reads; a decrease is one wrap, or None when the range is unknown.

    Without ``max_energy_range_uj`` a decrease cannot be undone, so the window is marked ``error``
    rather than guessing a modulus and reporting a wrong number.
    """
    if now_uj >= prev_uj:
        return now_uj - prev_uj
    if range_uj is None:
        return None
    return (now_uj - prev_uj) % (range_uj + 1)


def poll_interval_s(range_uj: int | None, power_bound_w: float) -> float:
    """Half the time the counter needs to wrap at the power bound, clamped to [0.05 s, 60 s]."""
    range_j = (range_uj if range_uj is not None else FALLBACK_RANGE_UJ) / 1e6
    return min(MAX_POLL_S, max(MIN_POLL_S, range_j / power_bound_w / 2))


@dataclass
class Zone:
    """One readable (or not) counter, and its state inside the current window."""

    domain: str
    energy_path: str
    range_uj: int | None
    status: DomainStatus = "ok"
    reason: str = ""
    cause: BaseException | None = None
    last_uj: int | None = None
    acc_uj: int = 0
    window_status: DomainStatus = "ok"
    window_reason: str = ""


def _probe(zone_dir: str, domain: str, read: Callable[[str], str]) -> Zone:
    """Read a zone once, turning every way it can fail into a typed status and a sentence."""
    energy_path = os.path.join(zone_dir, "energy_uj")
    zone = Zone(domain, energy_path, range_uj=None)
    try:
        int(read(energy_path).strip())
    except PermissionError as err:
        zone.status, zone.cause = "permission", err
        zone.reason = (f"{energy_path}: permission denied "
                       "(run as root or chmod a+r it; Linux >= 5.10 makes it root-only)")
    except FileNotFoundError as err:
        zone.status, zone.cause, zone.reason = "absent", err, f"{energy_path}: no such file"
    except ValueError as err:
        zone.status, zone.cause = "masked", err
        zone.reason = f"{energy_path}: reads no counter value (masked, e.g. by a container runtime)"
    except OSError as err:
        zone.status, zone.cause, zone.reason = "error", err, f"{energy_path}: {err.strerror or err}"
    try:
        zone.range_uj = int(read(os.path.join(zone_dir, "max_energy_range_uj")).strip())
    except (OSError, ValueError):
        zone.range_uj = None
    return zone


def _natural(name: str) -> list:
    """Sort key that puts cpu-package-2 before cpu-package-10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _zone_name(zone_dir: str, read: Callable[[str], str]) -> str | None:
    try:
        return read(os.path.join(zone_dir, "name")).strip()
    except OSError:
        return None


def _subzone_dirs(root: str, entries: list[str], pkg_index: str) -> dict[str, str]:
    """A package's subzones, nested in it or listed beside it (sysfs does both), once each."""
    pkg_dir = os.path.join(root, f"intel-rapl:{pkg_index}")
    found = {e: os.path.join(root, e) for e in entries
             if (m := _SUBZONE.match(e)) and m.group(1) == pkg_index}
    if os.path.isdir(pkg_dir):
        found.update({e: os.path.join(pkg_dir, e) for e in os.listdir(pkg_dir) if _SUBZONE.match(e)})
    return found


def discover_zones(root: str, read: Callable[[str], str] = read_text) -> list[Zone]:
    """Package zones as ``cpu-package-*`` and their dram subzones as ``dram-*``, in name order.

    ``psys`` and MMIO zones are skipped: they overlap the packages.
    """
    entries = sorted(os.listdir(root))
    zones: dict[str, Zone] = {}
    for entry in entries:
        if not (match := _PACKAGE.match(entry)):
            continue
        pkg_dir = os.path.join(root, entry)
        name = _zone_name(pkg_dir, read) or f"package-{match.group(1)}"
        if not name.startswith("package-"):
            continue
        zones.setdefault(f"cpu-{name}", _probe(pkg_dir, f"cpu-{name}", read))
        dram = f"dram-{name.removeprefix('package-')}"
        for sub_dir in sorted(_subzone_dirs(root, entries, match.group(1)).values()):
            if _zone_name(sub_dir, read) == "dram":
                zones.setdefault(dram, _probe(sub_dir, dram, read))
    return [zones[d] for d in sorted(zones, key=_natural)]


class RaplMeter(TracingMeter):
    """Powercap RAPL counters, polled by a daemon thread so that no wrap goes unseen.

    ``clock``, ``read`` and ``background`` are there so tests can drive ``poll()`` by hand against
    a fabricated tree and check joules exactly.
    """

    name = "rapl"

    def __init__(
        self,
        root: str | os.PathLike = "/sys/class/powercap",
        *,
        power_bound_w: float = DEFAULT_POWER_BOUND_W,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[str], str] = read_text,
        background: bool = True,
    ) -> None:
        super().__init__()
        self.root = os.fspath(root)
        self._clock, self._read, self._background = clock, read, background
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._availability, self.zones = self._discover()
        readable = [z for z in self.zones if z.status == "ok"]
        self.poll_interval_s = min(
            (poll_interval_s(z.range_uj, power_bound_w) for z in readable), default=MAX_POLL_S
        )

    def _discover(self) -> tuple[Availability, list[Zone]]:
        try:
            zones = discover_zones(self.root, self._read)
        except FileNotFoundError as err:
            self.cause = err
            return Availability(False, "absent", f"{self.root}: no such directory (no powercap here)", ()), []
        except PermissionError as err:
            self.cause = err
            return Availability(False, "permission", f"{self.root}: permission denied", ()), []
        if not zones:
            reason = f"{self.root}: no intel-rapl zones (a VM, a container or a CPU without RAPL)"
            self.cause = FileNotFoundError(errno.ENOENT, reason, self.root)
            return Availability(False, "absent", reason, ()), []
        ok = tuple(z.domain for z in zones if z.status == "ok")
        bad = [z for z in zones if z.status != "ok"]
        reason = "; ".join(dict.fromkeys(z.reason for z in bad))
        if not ok:
            self.cause = bad[0].cause
            return Availability(False, bad[0].status, reason, ()), zones
        reason = f"reads {', '.join(ok)}" + (f"; {reason}" if reason else "")
        return Availability(True, "ok", reason, ok), zones

    def available(self) -> Availability:
        return self._availability

    def poll(self) -> float:
        """Read every readable counter once, add the deltas; returns the time of the read."""
        with self._lock:
            return self._poll_locked()

    def _poll_locked(self) -> float:
        now = self._clock()
        for zone in self.zones:
            if zone.status != "ok":
                continue
            try:
                raw_uj = int(self._read(zone.energy_path).strip())
            except (OSError, ValueError) as err:
                zone.last_uj, zone.window_status = None, "error"
                zone.window_reason = f"{zone.energy_path}: read failed during the window ({err})"
                continue
            self._record(now, zone.domain, raw_uj / 1e6)
            if zone.last_uj is not None:
                delta = counter_delta_uj(zone.last_uj, raw_uj, zone.range_uj)
                if delta is None:
                    zone.window_status = "error"
                    zone.window_reason = f"{zone.energy_path}: went back and max_energy_range_uj is unknown"
                else:
                    zone.acc_uj += delta
            zone.last_uj = raw_uj
        return now

    def start(self) -> None:
        if self._closing.is_set():
            raise RuntimeError("RaplMeter.start() after close()")
        with self._lock:
            self._t0 = self._poll_locked()
            for zone in self.zones:
                zone.acc_uj = 0
                zone.window_status = "ok" if zone.last_uj is not None else "error"
        if self._background and self._thread is None and self._availability.ok:
            self._thread = threading.Thread(target=self._run, name="mpibench-rapl-poll", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closing.wait(self.poll_interval_s):  # sleeps, never spins
            self.poll()

    def stop(self) -> EnergyReading:
        if self._t0 is None:
            raise RuntimeError("RaplMeter.stop() without start()")
        with self._lock:
            t1 = self._poll_locked()
            joules, status, reasons = {}, {}, {}
            for zone in self.zones:
                state = zone.status if zone.status != "ok" else zone.window_status
                status[zone.domain] = state
                joules[zone.domain] = zone.acc_uj / 1e6 if state == "ok" else NAN
                if state != "ok":
                    reasons[zone.domain] = zone.reason or zone.window_reason
            window_s, self._t0 = t1 - self._t0, None
        if not self.zones:
            joules, status = {"cpu-package": NAN}, {"cpu-package": self._availability.status}
            reasons = {"cpu-package": self._availability.reason}
        method = "counter" if self._availability.ok else "none"
        return EnergyReading(joules, status, window_s, method, reasons).stuck_checked()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
