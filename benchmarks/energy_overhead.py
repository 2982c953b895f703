"""How much does an open energy window slow inference down? Prints with/without throughput per round.

Arms alternate (which goes first alternates too) so that drift in clock speed or temperature hits
both. The "with" arm runs the meter ``make_meter("auto", "cpu")`` picks here and, so that a polling
thread really runs even on machines without RAPL, a RAPL meter on a fabricated powercap tree whose
small counter range makes it poll at the fastest allowed rate. The last line is
``energy_overhead_ratio: X`` (median throughput with / without; 1.000 means no cost).

    python benchmarks/energy_overhead.py [--quick] [--model-size tiny|base]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DistilBertConfig, DistilBertModel

try:
    import mpibench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpibench.energy import CompositeMeter, RaplMeter, make_meter  # noqa: E402

BATCH, SEQ_LEN = 8, 128
CONFIGS = {
    "base": DistilBertConfig(),  # distilbert-base: 6 layers, dim 768
    "tiny": DistilBertConfig(dim=128, hidden_dim=512, n_layers=2, n_heads=2),
}


def fabricated_powercap(root: Path) -> None:
    """One package with a DRAM subzone; a 1 J counter range makes the meter poll every 0.05 s."""
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0/intel-rapl:0:0", "dram")):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text("0\n")
        (root / zone / "max_energy_range_uj").write_text("1000000\n")


def throughput_sps(model: torch.nn.Module, input_ids: torch.Tensor, arm_s: float, meter=None) -> float:
    """Forward passes back to back for at least arm_s seconds (whole iterations); samples per second."""
    if meter is not None:
        meter.start()
    iterations, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        while (elapsed_s := time.perf_counter() - t0) < arm_s:
            model(input_ids=input_ids)
            iterations += 1
    if meter is not None:
        meter.stop()
    return iterations * input_ids.shape[0] / elapsed_s


def poll_cost_s(meter: RaplMeter, polls: int = 2000) -> float:
    """Seconds one poll of every counter takes: the polling thread's whole cost, load-independent."""
    t0 = time.perf_counter()
    for _ in range(polls):
        meter.poll()
    return (time.perf_counter() - t0) / polls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short arms (CI smoke run)")
    parser.add_argument("--model-size", choices=sorted(CONFIGS), default="base")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both arms (default 5, quick 2)")
    parser.add_argument("--arm-s", type=float, default=None, help="seconds per arm (default 2.5, quick 0.3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    arm_s = args.arm_s or (0.3 if args.quick else 2.5)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = CONFIGS[args.model_size]
    model = DistilBertModel(config).eval()
    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN))
    throughput_sps(model, input_ids, arm_s / 2)  # warm-up: allocator, thread pool
    with tempfile.TemporaryDirectory() as tmp:
        fabricated_powercap(Path(tmp))
        poller = RaplMeter(tmp)
        meter = CompositeMeter([make_meter("auto", "cpu"), poller])
        print(f"model distilbert-{args.model_size} (random init), batch {BATCH}, seq {SEQ_LEN}, 2 threads; "
              f"meter {meter.name}: {meter.available().reason}")
        with_sps, without_sps = [], []
        for r in range(rounds):
            arms = [("with", meter), ("without", None)]
            for label, arm_meter in arms if r % 2 == 0 else arms[::-1]:
                sps = throughput_sps(model, input_ids, arm_s, arm_meter)
                (with_sps if arm_meter else without_sps).append(sps)
                print(f"round {r + 1}/{rounds} {label:>7}: {sps:9.2f} samples/s")
        polls = len(meter.trace())
        cost_s = poll_cost_s(RaplMeter(tmp, background=False))
        meter.close()
    print(f"one poll: {cost_s * 1e6:.1f} us every {poller.poll_interval_s} s "
          f"= {100 * cost_s / poller.poll_interval_s:.3f} % of one core")
    ratio = statistics.median(with_sps) / statistics.median(without_sps)
    print(f"median with {statistics.median(with_sps):.2f} samples/s, "
          f"without {statistics.median(without_sps):.2f} samples/s; {polls} counter samples taken")
    print(f"energy_overhead_ratio: {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
