"""The NVML meter against a strict fake ``pynvml``: device matching, counter and sampled paths."""

from __future__ import annotations

import inspect
import math
import sys
import threading
from dataclasses import dataclass

import pytest

from mpibench.energy import CompositeMeter, EnergyUnavailable, NullMeter, NvmlMeter, make_meter
from mpibench.energy.nvml import normalize_bus_id, normalize_uuid

NOT_SUPPORTED = 3


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class NVMLError_NotSupported(NVMLError):  # noqa: N801 -- pynvml's name
    def __init__(self) -> None:
        super().__init__(NOT_SUPPORTED)


@dataclass
class FakeGpu:
    uuid: str  # as NVML spells it: "GPU-..."
    bus_id: str  # as NVML spells it: "00000000:3B:00.0"
    arch: int = 7  # Volta = 5
    energy_mj: int | None = 0  # None: the counter is not supported
    power_mw: int | None = 100_000  # None: power is not supported


class Handle:
    """Opaque, like NVML's: an integer index passed where a handle belongs fails loudly."""

    def __init__(self, index: int) -> None:
        self.index = index


class FakeNvml:
    """Exactly the pynvml names the meter may use, with pynvml's parameter names; nothing else."""

    NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_DEVICE_ARCH_VOLTA = 5
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus, self.init_error, self.inits, self.calls = gpus, init_error, 0, []

    def _gpu(self, handle: Handle) -> FakeGpu:
        assert isinstance(handle, Handle), f"expected an NVML handle, got {handle!r}"
        assert self.inits > 0, "NVML used before nvmlInit()"
        return self.gpus[handle.index]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        return Handle(index)

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetPciInfo(self, handle: Handle):
        class PciInfo:  # ctypes gives the char array as bytes
            busId = self._gpu(handle).bus_id.encode()

        return PciInfo()

    def nvmlDeviceGetArchitecture(self, device: Handle) -> int:
        return self._gpu(device).arch

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        self.calls.append("energy")
        if self._gpu(handle).energy_mj is None:
            raise NVMLError_NotSupported()
        return self._gpu(handle).energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        self.calls.append("power")
        if self._gpu(handle).power_mw is None:
            raise NVMLError_NotSupported()
        return self._gpu(handle).power_mw


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


UUIDS = ["GPU-11111111-aaaa-bbbb-cccc-000000000000",
         "GPU-22222222-aaaa-bbbb-cccc-000000000000",
         "GPU-33333333-AAAA-BBBB-CCCC-000000000000"]
BUSES = ["00000000:1A:00.0", "00000000:3B:00.0", "00000000:88:00.0"]


@pytest.fixture
def fake(monkeypatch) -> FakeNvml:
    nvml = FakeNvml([FakeGpu(u, b, energy_mj=1_000 * (i + 1)) for i, (u, b) in enumerate(zip(UUIDS, BUSES))])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml


def test_fake_matches_the_real_pynvml_signatures():
    real = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed: the fake is checked where it is")
    for name, member in inspect.getmembers(FakeNvml):
        if name.startswith("nvml"):
            fake_params = list(inspect.signature(member).parameters)[1:]  # less self
            assert fake_params == list(inspect.signature(getattr(real, name)).parameters), name
        elif name.startswith("NVML_"):
            assert getattr(real, name) == member, name
    assert issubclass(real.NVMLError_NotSupported, real.NVMLError)


def test_picks_the_gpu_by_uuid_when_cuda_visible_devices_reorders(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0,1")  # torch's cuda:0 is NVML index 2
    torch_uuid = "33333333-aaaa-bbbb-cccc-000000000000"  # str(torch props.uuid): no prefix, lower case
    clock = FakeClock()
    meter = NvmlMeter(gpu_uuid=torch_uuid, clock=clock, background=False)
    assert meter.available().ok and meter.available().domains == (f"gpu-{torch_uuid}",)
    meter.start()
    fake.gpus[2].energy_mj += 42_500
    fake.gpus[0].energy_mj += 999_000  # another rank's GPU: must not be counted
    clock.t += 1.0
    reading = meter.stop()
    assert reading.joules == {f"gpu-{torch_uuid}": 42.5}
    assert (reading.method, reading.window_s, reading.status[f"gpu-{torch_uuid}"]) == ("counter", 1.0, "ok")
    meter.close()
    assert fake.inits == 0


def test_picks_the_gpu_by_pci_bus_id(fake):
    meter = NvmlMeter(pci_bus_id="0000:3b:00.0", background=False)
    assert meter.available().domains == ("gpu-22222222-aaaa-bbbb-cccc-000000000000",)
    meter.start()
    fake.gpus[1].energy_mj += 1_500
    assert meter.stop().joules == {"gpu-22222222-aaaa-bbbb-cccc-000000000000": 1.5}


def test_counter_path_trace_holds_raw_joules(fake):
    clock = FakeClock()
    meter = NvmlMeter(gpu_uuid=UUIDS[0], clock=clock, background=False)
    fake.gpus[0].energy_mj = 1_000_000
    meter.start()
    fake.gpus[0].energy_mj = 1_250_500
    clock.t += 2.0
    assert meter.stop().joules == {"gpu-11111111-aaaa-bbbb-cccc-000000000000": 250.5}
    domain = "gpu-11111111-aaaa-bbbb-cccc-000000000000"
    assert meter.trace() == [(50.0, domain, 1000.0), (52.0, domain, 1250.5)]


def test_counter_going_back_is_error_not_negative(fake):
    meter = NvmlMeter(gpu_uuid=UUIDS[0], background=False)
    fake.gpus[0].energy_mj = 5_000
    meter.start()
    fake.gpus[0].energy_mj = 10  # driver reloaded
    reading = meter.stop()
    (value,) = reading.joules.values()
    assert math.isnan(value) and set(reading.status.values()) == {"error"}


def drive_sampled(meter: NvmlMeter, gpu: FakeGpu, clock: FakeClock) -> float:
    """Power 100 W, 200 W, 200 W, 100 W one second apart: the trapezoid gives 500 J."""
    gpu.power_mw = 100_000
    meter.start()
    for power_mw in (200_000, 200_000, 100_000):
        clock.t += 1.0
        gpu.power_mw = power_mw
        if power_mw == 200_000:
            meter.poll()
    reading = meter.stop()
    assert (reading.method, reading.window_s) == ("sampled", 3.0)
    (value,) = reading.joules.values()
    return value


def test_pre_volta_samples_power_and_never_asks_for_the_counter(fake):
    fake.gpus[0].arch = 4  # Pascal
    clock = FakeClock()
    meter = NvmlMeter(gpu_uuid=UUIDS[0], clock=clock, background=False)
    assert meter.method == "sampled" and "sampled" in meter.available().reason
    assert drive_sampled(meter, fake.gpus[0], clock) == 500.0
    assert "energy" not in fake.calls


def test_counter_not_supported_falls_back_to_sampling(fake):
    fake.gpus[1].energy_mj = None
    clock = FakeClock()
    meter = NvmlMeter(pci_bus_id="3b:00.0", clock=clock, background=False)
    assert meter.method == "sampled"
    assert drive_sampled(meter, fake.gpus[1], clock) == 500.0


def test_sampled_windows_count_only_their_own_power_and_the_trace_keeps_the_integral(fake):
    fake.gpus[0].arch = 4
    clock = FakeClock()
    meter = NvmlMeter(gpu_uuid=UUIDS[0], clock=clock, background=False)
    assert drive_sampled(meter, fake.gpus[0], clock) == 500.0
    clock.t += 10.0  # between windows: not integrated
    assert drive_sampled(meter, fake.gpus[0], clock) == 500.0
    domain = "gpu-11111111-aaaa-bbbb-cccc-000000000000"
    first = [(50.0, domain, 0.0), (51.0, domain, 150.0), (52.0, domain, 350.0), (53.0, domain, 500.0)]
    second = [(63.0, domain, 500.0), (64.0, domain, 650.0), (65.0, domain, 850.0), (66.0, domain, 1000.0)]
    assert meter.drain() == first + second and meter.drain() == []


def test_sampling_thread_runs_only_inside_the_window(fake):
    fake.gpus[0].energy_mj = None
    enough = threading.Event()
    real_power = fake.nvmlDeviceGetPowerUsage

    def counting_power(handle):
        if fake.calls.count("power") >= 5:
            enough.set()
        return real_power(handle)

    fake.nvmlDeviceGetPowerUsage = counting_power
    meter = NvmlMeter(gpu_uuid=UUIDS[0], sample_interval_s=0.001)
    meter.start()
    sampler = meter._thread
    assert enough.wait(timeout=30.0), "the sampling thread never sampled"
    reading = meter.stop()
    assert sampler.daemon and not sampler.is_alive() and meter._thread is None
    (value,) = reading.joules.values()
    assert value == pytest.approx(100.0 * reading.window_s)  # constant 100 W


def test_no_matching_gpu_is_absent_and_says_what_nvml_sees(fake):
    meter = NvmlMeter(gpu_uuid="GPU-deadbeef", pci_bus_id="0000:99:00.0", background=False)
    availability = meter.available()
    assert (availability.ok, availability.status) == (False, "absent")
    assert "GPU-deadbeef" in availability.reason and "0000:3b:00.0" in availability.reason
    meter.start()
    reading = meter.stop()
    assert math.isnan(reading.joules["gpu-deadbeef"]) and reading.status == {"gpu-deadbeef": "absent"}
    assert reading.reasons == {"gpu-deadbeef": availability.reason}
    with pytest.raises(EnergyUnavailable, match="--energy nvml: no NVML device matches GPU-deadbeef"):
        make_meter("nvml", "cuda:0", gpu_uuid="GPU-deadbeef")


def test_gpu_without_counter_or_power_is_unsupported(fake):
    fake.gpus[0].energy_mj = fake.gpus[0].power_mw = None
    meter = NvmlMeter(gpu_uuid=UUIDS[0], background=False)
    assert meter.available().status == "unsupported-gpu"
    meter.start()
    cols = meter.stop().columns(4, cpu_exclusive=True)
    assert cols["energy_status"] == "unsupported-gpu" and math.isnan(cols["energy_j"])


def test_nvml_that_cannot_initialise_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error=9))  # driver not loaded
    meter = NvmlMeter(gpu_uuid=UUIDS[0])
    assert meter.available().status == "absent" and "could not be initialised" in meter.available().reason
    assert isinstance(meter.cause, NVMLError)
    auto = make_meter("auto", "cuda:0", gpu_uuid=UUIDS[0], powercap_root="/nonexistent")
    assert isinstance(auto, NullMeter) and auto.available().status == "absent"


def test_no_gpu_identity_is_absent(fake):
    assert "no GPU UUID or PCI bus id" in NvmlMeter().available().reason


def test_auto_on_gpu_reads_gpu_and_host(fake, tmp_path):
    pkg = tmp_path / "intel-rapl:0"
    pkg.mkdir()
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").write_text("0\n")
    (pkg / "max_energy_range_uj").write_text("262143328850\n")
    meter = make_meter("auto", "cuda:1", powercap_root=str(tmp_path), gpu_uuid=UUIDS[1])
    assert isinstance(meter, CompositeMeter) and meter.available().ok
    meter.start()
    fake.gpus[1].energy_mj += 80_000
    (pkg / "energy_uj").write_text("20000000\n")
    reading = meter.stop()
    meter.close()
    cols = reading.columns(10, cpu_exclusive=False)
    assert (cols["energy_j"], cols["energy_gpu_j"], cols["energy_cpu_j"]) == (100.0, 80.0, 20.0)
    assert (cols["energy_status"], cols["energy_method"], cols["j_per_sample"]) == ("shared", "counter", 10.0)
    assert fake.inits == 0


def test_normalisers():
    assert normalize_uuid(b"GPU-AbC") == normalize_uuid("abc") == "abc"
    assert normalize_bus_id("00000000:3B:00.0") == normalize_bus_id("0000:3b:00.0") == "0000:3b:00.0"
    assert normalize_bus_id("3b:00.1") == "0000:3b:00.1"
