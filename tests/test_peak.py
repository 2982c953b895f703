"""Peak FLOP/s, MFU and the model FLOPs they are compared with."""

import math

import pytest

from mpibench.flops import distilbert_flops_per_sample
from mpibench.peak import cpu_info, flops_per_cycle, mfu, peak_tflops

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
    assert distilbert_flops_per_sample(8, n_layers=1, dim=4, hidden_dim=8) == 2 * (1536 + 24)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flops_match_the_matmuls_torch_runs(attn):
    """The formula counts exactly the matmuls of a real forward pass.

    Eager attention runs its two attention products as bmm, which FlopCounterMode counts: exact.
    sdpa (what mpibench builds) runs them on CPU in `_scaled_dot_product_flash_attention_for_cpu`,
    which has no FLOP formula in torch's counter (2.13), so its total falls short by exactly the
    attention term 2 * 2*s^2*d per layer and sample (or is exact, once torch learns to count it).
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    arch = dict(n_layers=2, dim=64, hidden_dim=256, n_heads=4)
    cfg = transformers.DistilBertConfig(**arch, num_labels=3, attn_implementation=attn)
    model = transformers.DistilBertForSequenceClassification(cfg).eval()
    batch, seq = 3, 32
    x = torch.randint(1000, 2000, (batch, seq))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=x, attention_mask=torch.ones_like(x))
    counted = counter.get_total_flops()
    expected = batch * distilbert_flops_per_sample(seq, **arch, num_labels=3)
    if attn == "eager":
        assert counted == expected
    else:
        attention = batch * arch["n_layers"] * 2 * (2 * seq * seq * arch["dim"])
        assert counted in (expected - attention, expected)
