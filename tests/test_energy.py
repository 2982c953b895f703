"""Energy meters against fabricated powercap trees and fake modules: exact joules, NaN never 0."""

from __future__ import annotations

import math
import random
import sys
import threading
import types
from collections import Counter

import pytest

from mpibench.energy import (
    CompositeMeter,
    EnergyReading,
    EnergyUnavailable,
    NullMeter,
    PyRaplMeter,
    RaplMeter,
    make_meter,
    measure_idle,
)
from mpibench.energy.null import DISABLED_REASON
from mpibench.energy.rapl import FALLBACK_RANGE_UJ, counter_delta_uj, poll_interval_s, read_text

RANGE_UJ = 10_000_000  # a 10 J counter, so that wraps are easy to build


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_zone(parent, entry: str, name: str, energy_uj: int = 0, range_uj: int | None = RANGE_UJ):
    zone = parent / entry
    zone.mkdir(parents=True)
    (zone / "name").write_text(name + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    if range_uj is not None:
        (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return zone


def set_energy(zone, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def rapl(root, clock: FakeClock, **kwargs) -> RaplMeter:
    return RaplMeter(str(root), clock=clock, background=False, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---- RAPL counting and wrap-around ----------------------------------------------------------


def test_counts_joules_over_the_window(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000)
    meter = rapl(tmp_path, clock)
    assert meter.available().ok and meter.available().domains == ("cpu-package-0",)
    meter.start()
    set_energy(pkg, 3_500_000)
    clock.t += 2.0
    reading = meter.stop()
    assert reading.joules == {"cpu-package-0": 2.5}
    assert reading.status == {"cpu-package-0": "ok"}
    assert reading.window_s == 2.0 and reading.method == "counter"
    assert meter.trace() == [(100.0, "cpu-package-0", 1.0), (102.0, "cpu-package-0", 3.5)]


def test_drain_hands_out_each_sample_once(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    clock.t += 1.0
    meter.stop()
    assert meter.drain() == [(100.0, "cpu-package-0", 1.0), (101.0, "cpu-package-0", 1.0)]
    assert meter.drain() == [] and meter.trace() == []
    set_energy(pkg, 2_000_000)
    meter.poll()
    assert meter.drain() == [(101.0, "cpu-package-0", 2.0)]


def test_composite_drain_merges_only_the_new_samples_in_time_order(tmp_path, clock):
    a, b = tmp_path / "a", tmp_path / "b"
    write_zone(a, "intel-rapl:0", "package-0")
    write_zone(b, "intel-rapl:0", "package-1")
    first, second = rapl(a, clock), rapl(b, clock)
    meter = CompositeMeter([first, second])
    first.poll()
    clock.t += 1.0
    second.poll()
    clock.t += 1.0
    first.poll()
    assert meter.drain() == [(100.0, "cpu-package-0", 0.0), (101.0, "cpu-package-1", 0.0),
                             (102.0, "cpu-package-0", 0.0)]
    clock.t += 1.0
    second.poll()
    assert meter.drain() == [(103.0, "cpu-package-1", 0.0)] and meter.drain() == []


def test_one_wrap_inside_the_window(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=9_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    set_energy(pkg, 500_000)  # wrapped past RANGE_UJ
    reading = meter.stop()
    assert reading.joules["cpu-package-0"] == (RANGE_UJ + 1 - 9_000_000 + 500_000) / 1e6


def test_wraps_between_background_polls_are_all_counted(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    for energy_uj in (8_000_000, 2_000_000, 9_000_000, 1_000_000):  # wraps twice
        set_energy(pkg, energy_uj)
        meter.poll()
    set_energy(pkg, 4_000_000)
    reading = meter.stop()
    expected_uj = 7_000_000 + (RANGE_UJ + 1 - 6_000_000) + 7_000_000 + (RANGE_UJ + 1 - 8_000_000) + 3_000_000
    assert reading.joules["cpu-package-0"] == expected_uj / 1e6
    assert reading.joules["cpu-package-0"] > RANGE_UJ / 1e6  # more than one counter range in one window


def test_random_counter_walk_sums_exactly_and_never_negative():
    rng = random.Random(7)
    range_uj, raw, true_uj, counted_uj = 262_143_328_850, 123_456, 0, 0
    for _ in range(2000):
        step = rng.randrange(0, range_uj // 2)  # the poll period keeps a step under one range
        new_raw = (raw + step) % (range_uj + 1)
        delta = counter_delta_uj(raw, new_raw, range_uj)
        assert delta is not None and delta >= 0
        counted_uj, true_uj, raw = counted_uj + delta, true_uj + step, new_raw
    assert counted_uj == true_uj


def test_start_rebaselines_each_window(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0)
    meter = rapl(tmp_path, clock)
    meter.start()
    set_energy(pkg, 1_000_000)
    assert meter.stop().joules["cpu-package-0"] == 1.0
    set_energy(pkg, 5_000_000)  # energy spent between windows is not the next task's
    meter.start()
    set_energy(pkg, 5_250_000)
    assert meter.stop().joules["cpu-package-0"] == 0.25


def test_stop_without_start_is_an_error(tmp_path, clock):
    write_zone(tmp_path, "intel-rapl:0", "package-0")
    with pytest.raises(RuntimeError, match="without start"):
        rapl(tmp_path, clock).stop()


# ---- RAPL zone discovery --------------------------------------------------------------------


def test_several_packages_and_dram_subzones(tmp_path, clock):
    pkg0 = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0)
    dram0 = write_zone(pkg0, "intel-rapl:0:0", "dram", energy_uj=0)  # nested, as in the device tree
    write_zone(pkg0, "intel-rapl:0:1", "core", energy_uj=0)  # inside the package: not reported
    pkg1 = write_zone(tmp_path, "intel-rapl:1", "package-1", energy_uj=0)
    dram1 = write_zone(tmp_path, "intel-rapl:1:0", "dram", energy_uj=0)  # top level, as in /sys/class
    write_zone(tmp_path, "intel-rapl:2", "psys", energy_uj=0)  # platform: overlaps the packages
    write_zone(tmp_path, "intel-rapl-mmio:0", "package-0", energy_uj=0)  # same package via MMIO
    meter = rapl(tmp_path, clock)
    assert meter.available().domains == ("cpu-package-0", "cpu-package-1", "dram-0", "dram-1")
    meter.start()
    for zone, energy_uj in ((pkg0, 10_000_000 - 1), (pkg1, 2_000_000), (dram0, 300_000), (dram1, 400_000)):
        set_energy(zone, energy_uj)
    reading = meter.stop()
    assert reading.joules == {"cpu-package-0": 9.999999, "cpu-package-1": 2.0, "dram-0": 0.3, "dram-1": 0.4}
    assert reading.cpu_j == pytest.approx(11.999999) and reading.dram_j == pytest.approx(0.7)
    assert math.isnan(reading.gpu_j)


def test_die_zone_names_stay_distinct(tmp_path, clock):
    write_zone(tmp_path, "intel-rapl:0", "package-0-die-0")
    die1 = write_zone(tmp_path, "intel-rapl:1", "package-0-die-1")
    write_zone(die1, "intel-rapl:1:0", "dram")
    meter = rapl(tmp_path, clock)
    assert meter.available().domains == ("cpu-package-0-die-0", "cpu-package-0-die-1", "dram-0-die-1")


def test_missing_name_file_falls_back_to_the_zone_index(tmp_path, clock):
    zone = write_zone(tmp_path, "intel-rapl:3", "package-3")
    (zone / "name").unlink()
    assert rapl(tmp_path, clock).available().domains == ("cpu-package-3",)


def test_ten_packages_sort_naturally(tmp_path, clock):
    for n in range(11):
        write_zone(tmp_path, f"intel-rapl:{n}", f"package-{n}")
    domains = rapl(tmp_path, clock).available().domains
    assert domains[:3] == ("cpu-package-0", "cpu-package-1", "cpu-package-2")
    assert domains[-1] == "cpu-package-10"


# ---- RAPL: what cannot be read --------------------------------------------------------------


def denying(*denied_suffixes: str):
    """A reader that raises PermissionError like a root-only sysfs file (chmod does not stop root)."""

    def read(path: str) -> str:
        if path.endswith(denied_suffixes):
            raise PermissionError(13, "Permission denied", path)
        return read_text(path)

    return read


def test_unreadable_counter_is_permission_and_nan(tmp_path, clock):
    write_zone(tmp_path, "intel-rapl:0", "package-0")
    meter = rapl(tmp_path, clock, read=denying("energy_uj"))
    availability = meter.available()
    assert not availability.ok and availability.status == "permission"
    assert str(tmp_path / "intel-rapl:0" / "energy_uj") in availability.reason
    assert "permission denied" in availability.reason
    assert isinstance(meter.cause, PermissionError)
    meter.start()
    reading = meter.stop()
    assert math.isnan(reading.joules["cpu-package-0"]) and reading.status["cpu-package-0"] == "permission"
    assert reading.method == "none" and reading.reasons["cpu-package-0"] == availability.reason


def test_one_unreadable_domain_leaves_the_others(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0)
    write_zone(pkg, "intel-rapl:0:0", "dram")
    meter = rapl(tmp_path, clock, read=denying("intel-rapl:0:0/energy_uj"))
    assert meter.available().ok and meter.available().domains == ("cpu-package-0",)
    assert "intel-rapl:0:0/energy_uj: permission denied" in meter.available().reason
    meter.start()
    set_energy(pkg, 2_000_000)
    reading = meter.stop()
    assert reading.joules["cpu-package-0"] == 2.0
    assert math.isnan(reading.joules["dram-0"]) and reading.status["dram-0"] == "permission"


def test_counter_reading_no_number_is_masked(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0")
    (pkg / "energy_uj").write_text("")  # what a bind-mounted /dev/null reads
    availability = rapl(tmp_path, clock).available()
    assert (availability.ok, availability.status) == (False, "masked")


def test_read_failure_inside_a_window_is_error_not_zero(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    (pkg / "energy_uj").unlink()
    meter.poll()
    (pkg / "energy_uj").write_text("3000000\n")
    reading = meter.stop()
    assert math.isnan(reading.joules["cpu-package-0"]) and reading.status["cpu-package-0"] == "error"
    assert "read failed during the window" in reading.reasons["cpu-package-0"]


def test_no_range_file_counts_until_the_counter_goes_back(tmp_path, clock):
    """Without max_energy_range_uj a wrap cannot be undone: that window is error/NaN, never a guess."""
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=1_000_000, range_uj=None)
    meter = rapl(tmp_path, clock)
    assert meter.available().ok
    assert meter.poll_interval_s == pytest.approx(FALLBACK_RANGE_UJ / 1e6 / 1000.0 / 2)
    meter.start()
    set_energy(pkg, 4_000_000)
    assert meter.stop().joules["cpu-package-0"] == 3.0
    meter.start()
    set_energy(pkg, 100)
    reading = meter.stop()
    assert math.isnan(reading.joules["cpu-package-0"]) and reading.status["cpu-package-0"] == "error"
    assert "max_energy_range_uj is unknown" in reading.reasons["cpu-package-0"]
    meter.start()  # the next window starts clean
    set_energy(pkg, 1_100)
    clean = meter.stop()
    assert clean.joules["cpu-package-0"] == 0.001 and clean.reasons == {}


@pytest.mark.parametrize("missing", [True, False], ids=["no-root", "no-zones"])
def test_no_zones_is_absent(tmp_path, clock, missing):
    root = tmp_path / "powercap"
    if not missing:
        root.mkdir()
    meter = rapl(root, clock)
    availability = meter.available()
    assert (availability.ok, availability.status) == (False, "absent")
    assert str(root) in availability.reason
    meter.start()
    reading = meter.stop()
    assert reading.status == {"cpu-package": "absent"} and math.isnan(reading.joules["cpu-package"])


# ---- RAPL polling period and thread ---------------------------------------------------------


def test_poll_interval_allows_at_most_one_wrap_and_is_clamped():
    assert poll_interval_s(20_000_000_000, 1000.0) == 10.0  # 20 kJ at 1 kW wraps in 20 s: poll at 10 s
    assert poll_interval_s(262_143_328_850, 1000.0) == 60.0
    assert poll_interval_s(1_000, 1000.0) == 0.05


def test_background_thread_polls_without_help_and_stops_on_close(tmp_path):
    write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0, range_uj=1_000)  # polls every 0.05 s
    reads, enough = [], threading.Event()

    def counting_read(path: str) -> str:
        if path.endswith("energy_uj"):
            reads.append(threading.current_thread().name)
            if reads.count("mpibench-rapl-poll") >= 3:
                enough.set()
            return f"{len(reads)}\n"  # a live counter: 1 µJ more at each read
        return read_text(path)

    meter = RaplMeter(str(tmp_path), read=counting_read)
    meter.start()
    assert enough.wait(timeout=30.0), "the polling thread never read the counter"
    reading = meter.stop()
    poller = meter._thread
    meter.close()
    assert reading.status == {"cpu-package-0": "ok"}
    assert poller.daemon and not poller.is_alive()
    with pytest.raises(RuntimeError, match="after close"):
        meter.start()


# ---- the task's columns ---------------------------------------------------------------------

CPU = {"cpu-package-0": 10.0, "cpu-package-1": 20.0, "dram-0": 3.0, "dram-1": 4.0}


def reading(joules: dict, status: dict | None = None, method="counter") -> EnergyReading:
    status = status or {d: "ok" for d in joules}
    return EnergyReading(joules, status, window_s=2.0, method=method)


def test_columns_exclusive_cpu_task_is_ok():
    cols = reading(CPU).columns(8, cpu_exclusive=True)
    assert cols["energy_j"] == 37.0 and cols["j_per_sample"] == 37.0 / 8
    assert (cols["energy_cpu_j"], cols["energy_dram_j"]) == (30.0, 7.0)
    assert math.isnan(cols["energy_gpu_j"])
    assert (cols["energy_status"], cols["energy_method"]) == ("ok", "counter")


def test_columns_shared_cpu_task_keeps_node_values():
    cols = reading(CPU).columns(8, cpu_exclusive=False)
    assert cols["energy_status"] == "shared"
    assert cols["energy_j"] == 37.0 and cols["energy_cpu_j"] == 30.0


def test_columns_unreadable_is_nan_with_reason():
    nan = float("nan")
    cols = reading({"cpu-package-0": nan}, {"cpu-package-0": "permission"}, "none").columns(
        8, cpu_exclusive=True
    )
    assert cols["energy_status"] == "permission" and cols["energy_method"] == "none"
    for key in ("energy_j", "energy_cpu_j", "energy_dram_j", "energy_gpu_j", "j_per_sample"):
        assert math.isnan(cols[key]), key


def test_columns_one_unreadable_host_domain_spoils_the_cpu_total():
    joules = dict(CPU, **{"dram-1": float("nan")})
    status = {d: ("permission" if d == "dram-1" else "ok") for d in joules}
    cols = reading(joules, status).columns(4, cpu_exclusive=True)
    assert cols["energy_status"] == "permission" and math.isnan(cols["energy_j"])
    assert cols["energy_cpu_j"] == 30.0 and math.isnan(cols["energy_dram_j"])


def test_columns_without_dram_zones_use_the_packages_alone():
    cols = reading({"cpu-package-0": 12.0}).columns(3, cpu_exclusive=True)
    assert cols["energy_j"] == 12.0 and cols["j_per_sample"] == 4.0
    assert math.isnan(cols["energy_dram_j"])


def test_columns_gpu_task():
    gpu = {"gpu-abc": 100.0}
    with_host = reading(dict(CPU, **gpu))
    assert with_host.columns(10, cpu_exclusive=True)["energy_j"] == 137.0
    assert with_host.columns(10, cpu_exclusive=True)["energy_status"] == "ok"
    shared = with_host.columns(10, cpu_exclusive=False)
    assert (shared["energy_status"], shared["energy_j"], shared["energy_gpu_j"]) == ("shared", 137.0, 100.0)
    gpu_only = reading(gpu).columns(10, cpu_exclusive=False)
    assert (gpu_only["energy_status"], gpu_only["energy_j"]) == ("ok", 100.0)
    assert reading(gpu).columns(10, cpu_exclusive=True, gpu_exclusive=False)["energy_status"] == "shared"
    host_unread = reading({"gpu-abc": 100.0, "cpu-package-0": float("nan")},
                          {"gpu-abc": "ok", "cpu-package-0": "permission"})
    cols = host_unread.columns(10, cpu_exclusive=True)
    assert (cols["energy_status"], cols["energy_j"]) == ("ok", 100.0) and math.isnan(cols["energy_cpu_j"])
    gpu_unread = reading({"gpu-abc": float("nan"), **CPU},
                         {"gpu-abc": "unsupported-gpu", **{d: "ok" for d in CPU}})
    cols = gpu_unread.columns(10, cpu_exclusive=True)
    assert cols["energy_status"] == "unsupported-gpu" and math.isnan(cols["energy_j"])
    assert cols["energy_cpu_j"] == 30.0


def test_columns_no_samples_or_no_domains_are_nan():
    assert math.isnan(reading(CPU).columns(0, cpu_exclusive=True)["j_per_sample"])
    empty = reading({}).columns(8, cpu_exclusive=True)
    assert empty["energy_status"] == "absent" and math.isnan(empty["energy_j"])


def test_columns_carry_the_reason_with_the_status():
    from mpibench.result import RESULT_COLUMNS

    ok = reading(CPU).columns(8, cpu_exclusive=True)
    assert ok["energy_reason"] == "" and set(ok) <= {c.name for c in RESULT_COLUMNS}
    assert "shared the CPU packages" in reading(CPU).columns(8, cpu_exclusive=False)["energy_reason"]
    gpu = reading({"gpu-abc": 1.0}).columns(8, cpu_exclusive=True, gpu_exclusive=False)
    assert gpu["energy_status"] == "shared" and "shared the GPU" in gpu["energy_reason"]
    unread = EnergyReading({"cpu-package-0": float("nan")}, {"cpu-package-0": "absent"}, 2.0, "none",
                           {"cpu-package-0": DISABLED_REASON})
    assert unread.columns(8, cpu_exclusive=False)["energy_reason"] == DISABLED_REASON  # not "shared": unread
    assert reading({}).columns(8, cpu_exclusive=True)["energy_reason"] == "no energy domain was read"


def test_kind_totals_are_nan_when_any_part_is():
    r = reading({"cpu-package-0": 1.0, "cpu-package-1": float("nan"), "dram-0": 2.0})
    assert math.isnan(r.cpu_j) and r.dram_j == 2.0 and math.isnan(r.total_j)
    assert reading({"cpu-package-0": 1.0, "dram-0": 2.0}).total_j == 3.0


# ---- factory, null meter, composite, idle power ---------------------------------------------


def test_auto_without_zones_is_a_null_meter_saying_absent(tmp_path):
    meter = make_meter("auto", "cpu", powercap_root=str(tmp_path))
    assert isinstance(meter, NullMeter)
    availability = meter.available()
    assert (availability.ok, availability.status) == (False, "absent")
    assert str(tmp_path) in availability.reason
    meter.start()
    cols = meter.stop().columns(8, cpu_exclusive=True)
    assert cols["energy_status"] == "absent" and math.isnan(cols["energy_j"])


def test_auto_with_zones_is_rapl(tmp_path):
    write_zone(tmp_path, "intel-rapl:0", "package-0")
    with make_meter("auto", "cpu", powercap_root=str(tmp_path)) as meter:
        assert isinstance(meter, RaplMeter) and meter.available().ok


def test_explicit_rapl_without_zones_raises_with_the_path(tmp_path):
    with pytest.raises(EnergyUnavailable, match="--energy rapl: .*no intel-rapl zones") as info:
        make_meter("rapl", "cpu", powercap_root=str(tmp_path))
    assert str(tmp_path) in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_none_backend_reads_nothing():
    meter = make_meter("none", "cpu")
    assert meter.available().reason == DISABLED_REASON and meter.available().status == "absent"
    meter.start()
    r = meter.stop()
    assert r.method == "none" and r.status == {"cpu-package": "absent"} and math.isnan(r.total_j)
    assert r.reasons == {"cpu-package": DISABLED_REASON}
    gpu = make_meter("none", "cuda:1", gpu_uuid="GPU-AbC")
    gpu.start()
    assert gpu.stop().status == {"gpu-abc": "absent"}


@pytest.mark.parametrize("backend, device", [("likwid", "cpu"), ("auto", "tpu"), ("auto", "cuda:x")])
def test_factory_rejects_unknown_names(backend, device):
    with pytest.raises(ValueError, match="expected"):
        make_meter(backend, device)


def test_auto_on_gpu_without_pynvml_still_reads_the_host(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0)
    meter = make_meter("auto", "cuda:0", powercap_root=str(tmp_path), gpu_uuid="4b2c")
    assert isinstance(meter, CompositeMeter)
    assert meter.available().status == "absent" and "nvidia-ml-py" in meter.available().reason
    meter.start()
    set_energy(pkg, 6_000_000)
    cols = meter.stop().columns(2, cpu_exclusive=True)
    meter.close()
    assert cols["energy_status"] == "absent" and math.isnan(cols["energy_j"])
    assert cols["energy_cpu_j"] == 6.0


def test_auto_on_gpu_without_anything_is_null(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = make_meter("auto", "cuda", powercap_root=str(tmp_path), gpu_uuid="4b2c")
    assert isinstance(meter, NullMeter) and meter.available().status == "absent"
    meter.start()
    assert meter.stop().status == {"gpu-4b2c": "absent"}


def test_measure_idle_gives_watts_per_domain(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=0)
    write_zone(pkg, "intel-rapl:0:0", "dram")
    meter = rapl(tmp_path, clock, read=denying("intel-rapl:0:0/energy_uj"))

    def sleep(seconds: float) -> None:
        clock.t += seconds
        set_energy(pkg, 250_000_000)

    idle = measure_idle(meter, 10.0, sleep=sleep)
    assert idle.watts["cpu-package-0"] == 25.0 and math.isnan(idle.watts["dram-0"])
    assert (idle.status, idle.reason) == ("ok", "")


def test_counter_that_stands_still_at_idle_is_stuck_not_zero_watts(tmp_path, clock):
    pkg = write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=5_000_000)
    write_zone(pkg, "intel-rapl:0:0", "dram", energy_uj=1_000)
    meter = rapl(tmp_path, clock)

    def sleep(seconds: float) -> None:  # the package moves, the DRAM counter never does
        clock.t += seconds
        set_energy(pkg, 45_000_000)

    idle = measure_idle(meter, 4.0, sleep=sleep)
    assert idle.watts["cpu-package-0"] == 10.0 and math.isnan(idle.watts["dram-0"])
    assert idle.status == "stuck"
    assert idle.reason.startswith("dram-0: the counter did not advance over the 4 s window")


def test_counter_that_stands_still_over_a_task_is_stuck_nan_with_reason(tmp_path, clock):
    write_zone(tmp_path, "intel-rapl:0", "package-0", energy_uj=7_000_000)
    meter = rapl(tmp_path, clock)
    meter.start()
    clock.t += 0.2
    short = meter.stop()  # too short to tell a still counter from a quiet one
    assert (short.joules, short.status) == ({"cpu-package-0": 0.0}, {"cpu-package-0": "ok"})
    meter.start()
    for _ in range(3):
        clock.t += 1.0
        meter.poll()
    r = meter.stop()
    assert math.isnan(r.joules["cpu-package-0"]) and r.status == {"cpu-package-0": "stuck"}
    assert "did not advance over the 3 s window" in r.reasons["cpu-package-0"]
    cols = r.columns(8, cpu_exclusive=True)
    assert cols["energy_status"] == "stuck" and cols["energy_reason"] == r.reasons["cpu-package-0"]
    for key in ("energy_j", "energy_cpu_j", "j_per_sample"):
        assert math.isnan(cols[key]), key


def test_stuck_check_marks_only_the_domains_that_read_exactly_zero():
    r = EnergyReading({"gpu-abc": 0.0, "cpu-package-0": 5.0, "dram-0": float("nan")},
                      {"gpu-abc": "ok", "cpu-package-0": "ok", "dram-0": "permission"}, 0.5, "counter",
                      {"dram-0": "dram-0: permission denied"}).stuck_checked()
    assert r.status == {"gpu-abc": "stuck", "cpu-package-0": "ok", "dram-0": "permission"}
    assert math.isnan(r.joules["gpu-abc"]) and r.joules["cpu-package-0"] == 5.0
    assert r.reasons["dram-0"] == "dram-0: permission denied" and r.reasons["gpu-abc"].startswith("gpu-abc: ")
    cols = r.columns(4, cpu_exclusive=True)
    assert (cols["energy_status"], cols["energy_reason"]) == ("stuck", r.reasons["gpu-abc"])
    nan_window = EnergyReading({"cpu-package-0": 0.0}, {"cpu-package-0": "ok"}, float("nan"), "none")
    assert nan_window.stuck_checked() is nan_window


# ---- pyRAPL adapter -------------------------------------------------------------------------


def fake_pyrapl(setup_error: Exception | None = None, pkg=None, dram=None, *, later=None):
    """The part of pyRAPL the adapter uses: setup(), Measurement(label).begin/end/result.

    Every measurement gives ``pkg`` and ``dram``, or, when ``later`` is given, only the first (the
    adapter's probe at setup) does and the others give ``later``'s (pkg, dram).
    """
    module = types.ModuleType("pyRAPL")
    ended = []

    def setup(devices=None, socket_ids=None):
        if setup_error is not None:
            raise setup_error

    class Measurement:
        def __init__(self, label, output=None):
            self.label, self.result = label, None

        def begin(self):
            pass

        def end(self):
            p, d = (pkg, dram) if later is None or not ended else later
            ended.append(self.label)
            self.result = types.SimpleNamespace(label="mpibench", duration=1.0, pkg=p, dram=d)

    class PyRAPLCantRecordEnergyConsumption(Exception):
        pass

    module.setup, module.Measurement = setup, Measurement
    module.PyRAPLCantRecordEnergyConsumption = PyRAPLCantRecordEnergyConsumption
    return module


def test_pyrapl_not_installed_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyRAPL", None)
    availability = PyRaplMeter().available()
    assert (availability.ok, availability.status) == (False, "absent")
    assert "pip install pyRAPL" in availability.reason
    with pytest.raises(EnergyUnavailable, match="pyRAPL is not installed") as info:
        make_meter("pyrapl")
    assert isinstance(info.value.__cause__, ImportError)


def test_pyrapl_setup_failures_become_statuses(monkeypatch):
    module = fake_pyrapl()
    module.setup = lambda: (_ for _ in ()).throw(module.PyRAPLCantRecordEnergyConsumption())
    monkeypatch.setitem(sys.modules, "pyRAPL", module)
    assert PyRaplMeter().available().status == "absent"
    monkeypatch.setitem(sys.modules, "pyRAPL", fake_pyrapl(PermissionError(13, "denied", "/sys/x/energy_uj")))
    availability = PyRaplMeter().available()
    assert availability.status == "permission" and "/sys/x/energy_uj" in availability.reason


def test_pyrapl_results_per_socket_and_wrap_is_nan(monkeypatch, clock, tmp_path):
    module = fake_pyrapl(pkg=[2_000_000.0, -4_000.0], dram=[500_000.0, 250_000.0])  # socket 1 wrapped
    monkeypatch.setitem(sys.modules, "pyRAPL", module)
    meter = PyRaplMeter(clock=clock, powercap_root=str(tmp_path))
    assert meter.available().ok
    meter.start()
    clock.t += 1.5
    r = meter.stop()
    assert r.joules["cpu-package-0"] == 2.0 and math.isnan(r.joules["cpu-package-1"])
    assert r.status["cpu-package-1"] == "error" and r.joules["dram-1"] == 0.25
    assert "negative delta" in r.reasons["cpu-package-1"]
    assert (r.window_s, r.method) == (1.5, "counter")


@pytest.mark.parametrize("later", [(None, None), ([3_000_000.0], None), (None, [1_000.0, 2_000.0])],
                         ids=["both-lists-none", "dram-none-socket-1-gone", "pkg-none"])
def test_pyrapl_domain_read_at_setup_never_disappears(monkeypatch, clock, tmp_path, later):
    """pyRAPL drops a whole list (None) when every socket's delta is negative: NaN and a reason, not absence."""
    module = fake_pyrapl(pkg=[0.0, 0.0], dram=[0.0, 0.0], later=later)
    monkeypatch.setitem(sys.modules, "pyRAPL", module)
    meter = PyRaplMeter(clock=clock, powercap_root=str(tmp_path))
    domains = ("cpu-package-0", "cpu-package-1", "dram-0", "dram-1")
    assert meter.available().domains == domains
    meter.start()
    clock.t += 0.1
    r = meter.stop()
    assert tuple(sorted(r.joules)) == tuple(sorted(r.status)) == domains
    for domain in domains:
        if r.status[domain] == "ok":
            assert r.joules[domain] > 0
        else:
            assert r.status[domain] == "error" and math.isnan(r.joules[domain])
            assert r.reasons[domain].startswith(f"{domain}: pyRAPL gave no value")
    assert math.isnan(r.total_j)
    assert r.columns(4, cpu_exclusive=True)["energy_status"] == "error"


class Powercap:
    """Fabricated powercap counters drawing constant power, rewritten in place as sysfs does.

    ``run(s)`` advances the clock and every counter; ``true_uj`` is the energy drawn so far, the counter
    is that modulo its range + 1.
    """

    def __init__(self, root, clock: FakeClock, zones: dict[str, tuple[str, float, int]]) -> None:
        self.clock = clock
        self.zones = {}  # domain -> (zone directory, watts, range_uj)
        self.true_uj = {}
        for domain, (entry, watts, range_uj) in zones.items():
            parent = root / entry.rsplit(":", 1)[0] if entry.count(":") == 2 else root
            name = "dram" if domain.startswith("dram") else domain.removeprefix("cpu-")
            self.zones[domain] = (write_zone(parent, entry, name, range_uj=range_uj), watts, range_uj)
            self.true_uj[domain] = 0

    def run(self, seconds: float) -> None:
        self.clock.t += seconds
        for domain, (zone, watts, range_uj) in self.zones.items():
            self.true_uj[domain] += round(watts * seconds * 1e6)
            set_energy(zone, self.true_uj[domain] % (range_uj + 1))


def fake_pyrapl_over(root):
    """pyRAPL as it reads powercap: files opened once at setup and re-read from offset 0, deltas of
    begin/end per socket (-1 where either side is missing), a list set to None when all its deltas
    are negative. Its paths are under ``root`` instead of /sys/class/powercap/intel-rapl."""
    module = types.ModuleType("pyRAPL")
    files = []  # [(pkg file, dram file or None)] per socket

    def setup(devices=None, socket_ids=None):
        module.close()  # a new setup replaces the sensor, as pyRAPL's does
        files.clear()
        socket = 0
        while (pkg_dir := root / f"intel-rapl:{socket}").exists():
            drams = [d for d in sorted(pkg_dir.glob(f"intel-rapl:{socket}:*")) if (d / "name").read_text() == "dram\n"]
            files.append((open(pkg_dir / "energy_uj"), open(drams[0] / "energy_uj") if drams else None))
            socket += 1
        if not files:
            raise module.PyRAPLCantRecordEnergyConsumption(None)

    def energy() -> list[float]:
        values = []
        for socket_files in files:
            for f in socket_files:
                if f is None:
                    values.append(-1)
                else:
                    f.seek(0, 0)
                    values.append(float(f.readline()))
        return values

    def only_if_any_positive(deltas):
        return deltas if any(x >= 0 for x in deltas) else None

    class Measurement:
        def __init__(self, label, output=None):
            self.label, self.result, self._begin = label, None, None

        def begin(self):
            self._begin = energy()

        def end(self):
            delta = [a - b if a >= 0 and b >= 0 else -1 for a, b in zip(energy(), self._begin)]
            self.result = types.SimpleNamespace(label=self.label, duration=0.0,
                                                pkg=only_if_any_positive(delta[0::2]),
                                                dram=only_if_any_positive(delta[1::2]))

    class PyRAPLCantRecordEnergyConsumption(Exception):
        pass

    module.setup, module.Measurement = setup, Measurement
    module.PyRAPLCantRecordEnergyConsumption = PyRAPLCantRecordEnergyConsumption
    module.close = lambda: [f.close() for socket_files in files for f in socket_files if f is not None]
    return module


# 100 W and 10 W on socket 0, 80 W and 5 W on socket 1; 300 J and 30 J counters: wraps every ~3-6 s
WRAPPING = {"cpu-package-0": ("intel-rapl:0", 100.0, 300_000_000), "dram-0": ("intel-rapl:0:0", 10.0, 30_000_000),
            "cpu-package-1": ("intel-rapl:1", 80.0, 300_000_000), "dram-1": ("intel-rapl:1:0", 5.0, 30_000_000)}


def test_pyrapl_over_wrapping_counters_is_exact_or_nan_never_wrong(tmp_path, clock, monkeypatch):
    hw = Powercap(tmp_path, clock, WRAPPING)
    module = fake_pyrapl_over(tmp_path)
    monkeypatch.setitem(sys.modules, "pyRAPL", module)
    meter = PyRaplMeter(clock=clock, powercap_root=str(tmp_path), power_bound_w=150.0)  # above each draw
    rng, seen = random.Random(11), Counter()
    try:
        assert meter.available().domains == ("cpu-package-0", "cpu-package-1", "dram-0", "dram-1")
        assert meter.wrap_s == {"cpu-package-0": 2.0, "cpu-package-1": 2.0, "dram-0": 0.2, "dram-1": 0.2}
        assert make_meter("pyrapl", powercap_root=str(tmp_path), power_bound_w=150.0).wrap_s == meter.wrap_s
        for _ in range(400):
            hw.run(rng.uniform(0.0, 7.0))  # a random phase of every counter at the window's start
            before = dict(hw.true_uj)
            meter.start()
            hw.run(rng.choice([rng.uniform(0.01, 0.2), rng.uniform(0.2, 2.0), rng.uniform(2.0, 12.0)]))
            r = meter.stop()
            assert set(r.joules) == set(r.status) == set(WRAPPING)  # no domain ever goes missing
            for domain in WRAPPING:
                if r.status[domain] == "ok":
                    assert r.joules[domain] == (hw.true_uj[domain] - before[domain]) / 1e6, domain
                    seen["ok"] += 1
                else:
                    assert r.status[domain] == "error" and math.isnan(r.joules[domain])
                    why = r.reasons[domain]
                    seen[next(k for k in ("no value", "negative delta", "longer than") if k in why)] += 1
    finally:
        module.close()
    assert set(seen) == {"ok", "no value", "negative delta", "longer than"}, seen


def test_pyrapl_662_j_across_wraps_is_nan_not_a_smaller_number(tmp_path, clock, monkeypatch):
    """100 W + 10 W for 662 J, with 300 J and 30 J counters that wrap inside the window."""
    hw = Powercap(tmp_path, clock, {d: z for d, z in WRAPPING.items() if d.endswith("-0")})
    hw.run(2.0)
    module = fake_pyrapl_over(tmp_path)
    monkeypatch.setitem(sys.modules, "pyRAPL", module)
    meter = PyRaplMeter(clock=clock, powercap_root=str(tmp_path))
    try:
        meter.start()
        hw.run(662 / 110)
        r = meter.stop()
    finally:
        module.close()
    assert sum(hw.true_uj.values()) - 2.0 * 110e6 == pytest.approx(662e6, abs=1)
    assert set(r.status) == {"cpu-package-0", "dram-0"} and set(r.status.values()) == {"error"}
    assert all(math.isnan(j) for j in r.joules.values())
    cols = r.columns(10, cpu_exclusive=True)
    assert cols["energy_status"] == "error" and math.isnan(cols["energy_j"]) and math.isnan(cols["energy_cpu_j"])
    assert cols["energy_reason"].startswith("cpu-package-0: ")


def test_real_pyrapl_reports_why_it_cannot_read():
    pytest.importorskip("pyRAPL", reason="pyRAPL (optional backend) is not installed here")
    meter = PyRaplMeter()
    availability = meter.available()
    if availability.ok:  # a machine with readable RAPL: the adapter must produce a real reading
        meter.start()
        r = meter.stop()
        assert r.joules and all(j >= 0 or math.isnan(j) for j in r.joules.values())
    else:
        assert availability.status in ("absent", "permission", "error")
        assert availability.reason.startswith("pyRAPL.setup() failed: ") and meter.cause is not None


def test_a_stop_request_ends_the_idle_wait():
    import time

    from mpibench.stopping import sleep_unless

    asked = {"at": time.monotonic() + 0.2}
    t0 = time.monotonic()
    sleep_unless(lambda: time.monotonic() > asked["at"], 600.0, step_s=0.05)
    assert time.monotonic() - t0 < 30  # far from 600 s, even on a busy machine
