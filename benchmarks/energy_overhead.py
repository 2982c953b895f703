"""How much does an open energy window slow inference down? Prints with/without throughput per round.

Arms alternate (which goes first alternates too) so that drift in clock speed or temperature hits
both. Each "with" arm gets a fresh meter, closed when the arm ends, so that no polling thread runs
during a "without" arm: the meter ``make_meter("auto", "cpu")`` picks here and, so that a polling
thread really runs even on machines without RAPL, a RAPL meter on a fabricated powercap tree whose
small counter range makes it poll at the fastest allowed rate. The model is mpibench's own
(``build_model``: real weights if cached, else seeded random init). The last line is
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

try:
    import mpibench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpibench.energy import CompositeMeter, RaplMeter, make_meter  # noqa: E402
from mpibench.inference.model import build_model  # noqa: E402

BATCH, SEQ_LEN = 8, 128
MODELS = {"base": "distilbert-base-uncased", "tiny": "distilbert-tiny"}  # names in architecture.BUILT_IN


def fabricated_powercap(root: Path) -> None:
    """One package with a DRAM subzone; a 1 J counter range makes the meter poll every 0.05 s."""
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0/intel-rapl:0:0", "dram")):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text("0\n")
        (root / zone / "max_energy_range_uj").write_text("1000000\n")


def arm_meter(powercap_root: str) -> CompositeMeter:
    """The meter of one "with" arm: what auto picks here, plus a poller on the fabricated tree."""
    return CompositeMeter([make_meter("auto", "cpu"), RaplMeter(powercap_root)])


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


def metered_sps(model: torch.nn.Module, input_ids: torch.Tensor, arm_s: float,
                powercap_root: str) -> tuple[float, int]:
    """One "with" arm on a fresh meter, closed when the arm ends so that its poller stops too.

    Returns the throughput and the counter samples the meter took.
    """
    with arm_meter(powercap_root) as meter:
        sps = throughput_sps(model, input_ids, arm_s, meter)
        return sps, len(meter.drain())


def poll_cost_s(meter: RaplMeter, polls: int = 2000) -> float:
    """Seconds one poll of every counter takes: the polling thread's whole cost, load-independent."""
    t0 = time.perf_counter()
    for _ in range(polls):
        meter.poll()
    return (time.perf_counter() - t0) / polls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short arms (CI smoke run)")
    parser.add_argument("--model-size", choices=sorted(MODELS), default="base")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both arms (default 5, quick 2)")
    parser.add_argument("--arm-s", type=float, default=None, help="seconds per arm (default 2.5, quick 0.3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    arm_s = args.arm_s or (0.3 if args.quick else 2.5)
    torch.set_num_threads(2)
    name = MODELS[args.model_size]
    built = build_model(name, 2, "cpu", "fp32", seed=0)
    model = built.model
    torch.manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ_LEN))
    throughput_sps(model, input_ids, arm_s / 2)  # warm-up: allocator, thread pool
    with tempfile.TemporaryDirectory() as tmp:
        fabricated_powercap(Path(tmp))
        with arm_meter(tmp) as meter:
            print(f"model {name} ({built.weights}), batch {BATCH}, seq {SEQ_LEN}, 2 threads; "
                  f"meter {meter.name}: {meter.available().reason}")
        with_sps, without_sps, polls = [], [], 0
        for r in range(rounds):
            for label in ("with", "without") if r % 2 == 0 else ("without", "with"):
                if label == "with":
                    sps, samples = metered_sps(model, input_ids, arm_s, tmp)
                    with_sps.append(sps)
                    polls += samples
                else:
                    sps = throughput_sps(model, input_ids, arm_s)
                    without_sps.append(sps)
                print(f"round {r + 1}/{rounds} {label:>7}: {sps:9.2f} samples/s")
        with RaplMeter(tmp, background=False) as probe:
            cost_s, interval_s = poll_cost_s(probe), probe.poll_interval_s
    print(f"one poll: {cost_s * 1e6:.1f} us every {interval_s} s "
          f"= {100 * cost_s / interval_s:.3f} % of one core")
    ratio = statistics.median(with_sps) / statistics.median(without_sps)
    print(f"median with {statistics.median(with_sps):.2f} samples/s, "
          f"without {statistics.median(without_sps):.2f} samples/s; {polls} counter samples taken")
    print(f"energy_overhead_ratio: {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
