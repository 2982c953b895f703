"""Peak FLOP/s, MFU and the model FLOPs they are compared with."""

import json
import math

import pytest

from conftest import run_cli
from mpibench.architecture import forward_flops_per_sample, shape_of
from mpibench.gemm import GemmPlan, best_tflops, gemm_peaks, matmul_at
from mpibench.peak import cpu_info, flops_per_cycle, gemm_by_host, measured_peak, mfu, mfu_measured, peak_tflops

AVX512 = {"sse2", "avx", "avx2", "fma", "avx512f"}


@pytest.mark.parametrize("name, precision, tflops", [
    ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
    ("NVIDIA A100 80GB PCIe", "bf16", 312.0),
    ("NVIDIA H100 PCIe", "fp16", 756.0),
    ("NVIDIA H100 80GB HBM3", "tf32", 494.5),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "fp32", 91.6),
    ("NVIDIA A10", "fp16", 125.0),
    ("Tesla T4", "fp16", 65.0),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
])
def test_gpu_table(name, precision, tflops):
    peak, source = peak_tflops(name, precision)
    assert peak == tflops
    assert source.startswith("datasheet:")


def test_gpu_unknown_or_missing_precision_is_nan_with_reason():
    peak, why = peak_tflops("NVIDIA A10G", "fp32")  # not the A10, not to be confused with it
    assert math.isnan(peak) and "unknown GPU" in why
    peak, why = peak_tflops("Tesla V100-SXM2-16GB", "bf16")
    assert math.isnan(peak) and "no bf16 peak" in why


@pytest.mark.parametrize("precision, flags, k, isa", [
    ("fp32", AVX512, 64, "avx512f"),
    ("fp32", {"sse2", "avx", "avx2", "fma"}, 32, "avx2+fma"),
    ("bf16", AVX512 | {"avx512_bf16"}, 128, "avx512_bf16"),
    ("bf16", AVX512 | {"avx512_bf16", "amx_bf16", "amx_tile"}, 1024, "amx_bf16"),
    ("bf16", {"sse2", "avx", "avx2", "fma"}, 32, "fp32 rate"),
    ("fp16", AVX512 | {"avx512_fp16"}, 128, "avx512_fp16"),
])
def test_cpu_estimate(precision, flags, k, isa):
    peak, source = peak_tflops("Intel(R) Xeon(R) Platinum 8480+", precision, cpu_cores=4,
                               cpu_flags=flags, cpu_ghz=2.5)
    assert peak == pytest.approx(4 * 2.5e9 * k / 1e12, rel=1e-12)
    assert source.startswith(f"estimate: 4 cores x 2.50 GHz x {k} FLOP/cycle (")
    assert isa in source


def test_cpu_estimate_unknowable():
    peak, why = peak_tflops("some cpu", "fp32", cpu_cores=2, cpu_flags=AVX512, cpu_ghz=math.nan)
    assert math.isnan(peak) and "no CPU clock" in why
    peak, why = peak_tflops("some cpu", "fp32", cpu_cores=2, cpu_flags={"neon"}, cpu_ghz=2.0)
    assert math.isnan(peak) and "FLOP/cycle" in why
    assert flops_per_cycle("tf32", AVX512) is None


def test_mfu():
    assert mfu(0.5, 2.0) == 0.25
    peak, _ = peak_tflops("NVIDIA A10G", "fp32")
    assert math.isnan(mfu(1.0, peak))
    assert math.isnan(mfu(1.0, 0.0))


def test_cpu_info_reads_this_host():
    info = cpu_info()
    assert set(info) >= {"model_name", "flags", "mhz", "max_mhz", "ghz"}
    assert info is cpu_info()  # read once


def test_flops_hand_count():
    """s=8, d=4, h=8, one layer: 4*s*d^2 + 2*s^2*d + 2*s*d*h = 512 + 512 + 512; head d^2 + 2d = 24."""
    shape = shape_of(dict(model_type="distilbert", n_layers=1, dim=4, hidden_dim=8, n_heads=2))
    assert forward_flops_per_sample(8, shape) == 2 * (1536 + 24)
    # grouped KV heads (2 of 4) and a gated MLP, a decoder's head on all 8 tokens:
    # Q, O 2*8*16 = 256; K, V 2*8*4*2 = 128; attention 2*64*4 = 512; MLP 3*8*4*8 = 768; head 8*4*2 = 64
    llama = shape_of(dict(model_type="llama", num_hidden_layers=1, hidden_size=4, intermediate_size=8,
                          num_attention_heads=4, num_key_value_heads=2))
    assert forward_flops_per_sample(8, llama) == 2 * (256 + 128 + 512 + 768 + 64)


#: Tiny configs of each family the formula must count exactly (eager attention: FlopCounterMode sees bmm).
FAMILIES = {
    "distilbert": dict(n_layers=2, dim=64, hidden_dim=256, n_heads=4),
    "bert": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=256, num_attention_heads=4),
    "roberta": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=256, num_attention_heads=4),
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4),
    "llama": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=172, num_attention_heads=4,
                  num_key_value_heads=2),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_flops_match_the_matmuls_torch_runs(family):
    """The formula counts exactly the matmuls of a real forward pass of each family (eager attention,
    whose two attention products FlopCounterMode counts; sdpa on CPU it cannot count in torch 2.13)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    fields = dict(model_type=family, **FAMILIES[family])
    cfg = transformers.AutoConfig.for_model(family, **FAMILIES[family], num_labels=3, pad_token_id=0)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
    batch, seq = 3, 32
    x = torch.randint(3, 200, (batch, seq))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=x, attention_mask=torch.ones_like(x))
    assert counter.get_total_flops() == batch * forward_flops_per_sample(seq, shape_of(fields), num_labels=3)


class FakeDevice:
    """A clock and a matmul that takes `n**3 * s_per_n3` seconds (plus `stall_s` on the calls listed)."""

    def __init__(self, s_per_n3: float, stall_s: float = 0.0, stalled: tuple[int, ...] = (), fails: set = frozenset(),
                 broken_after: int = 10 ** 9):
        self.now, self.s_per_n3, self.stall_s, self.stalled, self.fails = 0.0, s_per_n3, stall_s, stalled, fails
        self.broken_after = broken_after  # calls that succeed before the device fails
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.now

    def make(self, n: int):
        if n in self.fails:
            raise RuntimeError(f"no matmul at {n}")

        def run():
            if len(self.calls) >= self.broken_after:
                raise RuntimeError("device lost")
            self.calls.append(n)
            self.now += n ** 3 * self.s_per_n3 + (self.stall_s if len(self.calls) in self.stalled else 0.0)
        return run


def test_gemm_grows_to_the_call_time_then_takes_the_best_repeat():
    dev = FakeDevice(s_per_n3=1e-12, stall_s=1.0, stalled=(6,))  # 2 TFLOP/s; the first repeat preempted
    tflops = best_tflops(dev.make, max_n=4096, min_n=256, call_s=0.1, repeats=5, cap_s=100, clock=dev.clock)
    # 256 .. 2048: at most 0.0086 s a call, 4096: 0.069 s (< call_s, but max_n): one call each
    assert dev.calls == [256, 512, 1024, 2048, 4096] + [4096] * 5
    assert tflops == pytest.approx(2.0)  # 2 n^3 / (n^3 * 1e-12) / 1e12; the stalled call does not count
    busy = FakeDevice(s_per_n3=1e-12, stall_s=1.0, stalled=tuple(range(5, 20)))  # every call at 4096 preempted
    tflops = best_tflops(busy.make, max_n=4096, min_n=256, call_s=0.1, repeats=5, cap_s=100, clock=busy.clock)
    assert busy.calls.count(4096) == 2 + 5 and tflops == pytest.approx(2.0)  # the clean calls at 2048 stand


def test_gemm_stops_growing_at_the_call_time_and_a_preempted_call_does_not_stop_it():
    dev = FakeDevice(s_per_n3=1e-12, stall_s=1.0, stalled=(1,))  # the very first call is preempted
    best_tflops(dev.make, max_n=1 << 14, min_n=256, call_s=0.05, repeats=3, cap_s=100, clock=dev.clock)
    assert sorted(set(dev.calls)) == [256, 512, 1024, 2048, 4096]  # 4096: 0.069 s >= 0.05 s: stop there
    assert dev.calls.count(4096) == 2 + 3


def test_gemm_keeps_within_its_cap():
    dev = FakeDevice(s_per_n3=1e-9)  # 2 GFLOP/s: 256 takes 0.017 s, 512 0.13 s
    tflops = best_tflops(dev.make, max_n=4096, min_n=256, call_s=1.0, repeats=10, cap_s=0.5, clock=dev.clock)
    assert set(dev.calls) == {256}  # 512 would need 8 x 0.017 x 11 s: more than the cap
    assert dev.now <= 0.5 and tflops == pytest.approx(2e-3)


def test_gemm_a_precision_it_cannot_run_or_runs_too_slowly_is_none():
    assert best_tflops(FakeDevice(1e-12, fails={256}).make, clock=FakeDevice(1e-12).clock) is None
    slow = FakeDevice(s_per_n3=1e-6)  # 17 s for n=256: absurd beside a 2 s cap
    assert best_tflops(slow.make, cap_s=2.0, clock=slow.clock) is None
    stopped = FakeDevice(1e-12)
    assert best_tflops(stopped.make, stop=lambda: "SIGTERM", clock=stopped.clock) is None and stopped.calls == []


def test_gemm_a_size_that_fails_keeps_the_last_good_one():
    dev = FakeDevice(s_per_n3=1e-12, fails={1024})  # e.g. out of memory
    tflops = best_tflops(dev.make, max_n=4096, call_s=1.0, repeats=2, cap_s=100, clock=dev.clock)
    assert set(dev.calls) == {256, 512} and dev.calls[-2:] == [512, 512] and tflops == pytest.approx(2.0)
    lost = FakeDevice(s_per_n3=1e-12, broken_after=2 + 2)  # fails after two timed calls at 512
    assert best_tflops(lost.make, max_n=512, repeats=5, cap_s=100, clock=lost.clock) == pytest.approx(2.0)


def test_gemm_on_tiny_real_matrices():
    torch = pytest.importorskip("torch")
    tflops = best_tflops(matmul_at("cpu", "fp32"), min_n=16, max_n=64, repeats=2, cap_s=1.0)
    assert tflops is not None and 0 < tflops < 1e3
    peaks = gemm_peaks(GemmPlan(("cpu",), ("fp32", "tf32")), cap_s=0.2)
    assert set(peaks) == {"cpu"} and set(peaks["cpu"]) == {"threads", "fp32"}  # tf32 is not a CPU GEMM
    assert peaks["cpu"]["threads"] >= 1 and peaks["cpu"]["fp32"] > 0
    assert gemm_peaks(GemmPlan(("cpu",), ("fp32",)), stop=lambda: "SIGTERM")["cpu"]["fp32"] is None
    if not torch.cuda.is_available():
        assert gemm_peaks(GemmPlan(("cuda",), ("fp32",))) == {}  # no GPU here: nothing to measure


def test_mfu_against_the_measured_gemm_peak():
    hosts = [{"host": "a", "gemm_tflops": json.dumps({"cpu": {"threads": 4, "fp32": 2.0, "bf16": None},
                                                       "cuda:1": {"bf16": 500.0}})},
             {"host": "b", "gemm_tflops": "{not json"}, {"host": "c", "gemm_tflops": ""}]
    gemm = gemm_by_host(hosts)
    assert set(gemm) == {"a", "c"} and gemm["c"] == {}
    row = {"host": "a", "bound_device": "cpu", "precision": "fp32", "threads": 2, "achieved_tflops": 0.25}
    assert measured_peak(gemm["a"], "cpu", "fp32", 2) == 1.0  # scaled to the task's threads
    assert mfu_measured(row, gemm) == 0.25
    assert mfu_measured({**row, "bound_device": "cuda:1", "precision": "bf16", "achieved_tflops": 100.0},
                        gemm) == 0.2  # a GPU's figure is not scaled
    for unknown in ({"precision": "bf16"}, {"precision": "fp16"}, {"host": "b"}, {"host": "z"},
                    {"bound_device": "cuda:0"}, {"threads": 0}, {"achieved_tflops": math.nan}):
        assert math.isnan(mfu_measured({**row, **unknown}, gemm)), unknown
    assert math.isnan(mfu_measured({"host": "a", "status": "failed"}, gemm))  # a failed row has no figures


def test_a_real_run_measures_its_gemm_peak_and_mfu_against_it(tmp_path):
    from mpibench.store import read_hosts, read_tasks

    out = tmp_path / "gemm.h5"
    proc = run_cli(["--model", "distilbert-tiny", "--batch-sizes", "1", "--precisions", "fp32", "--min-time", "0.2",
                    "--max-time", "0.5", "--warmup-s", "0", "--energy-idle-s", "0", "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gemm = json.loads(read_hosts(out)["gemm_tflops"][0])
    assert set(gemm) == {"cpu"} and math.isfinite(gemm["cpu"]["fp32"]) and gemm["cpu"]["fp32"] > 0
    assert "bf16" not in gemm["cpu"]  # only the sweep's precisions are measured
    t = read_tasks(out)
    assert list(t["precision"]) == ["fp32"] and t["status"][0] == "ok"
    expected = t["achieved_tflops"][0] / (gemm["cpu"]["fp32"] * t["threads"][0] / gemm["cpu"]["threads"])
    assert math.isfinite(t["mfu_measured"][0]) and t["mfu_measured"][0] == pytest.approx(expected)
