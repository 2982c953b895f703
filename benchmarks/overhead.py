"""Harness overhead: mpibench's forward throughput vs a bare torch.inference_mode() loop.

Both arms run in this one process, alternately, on the same model, inputs and threads, so machine
noise hits both alike. Last line: `harness_overhead_ratio: X` (mpibench / bare; 1.0 = no overhead).

    python benchmarks/overhead.py             # distilbert-base, fp32, batch 8, seq 128, 2 threads
    python benchmarks/overhead.py --quick     # the tiny model, a few seconds (CI smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mpibench.config import MeasureConfig
from mpibench.inference.model import InferenceWorkload, build_model
from mpibench.inference.runner import Runner
from mpibench.stats import summarize


def bare_forward_sps(model, x, batch_size: int, seconds: float) -> float:
    """The simplest honest loop: forward passes back to back under inference_mode."""
    with torch.inference_mode():
        model(input_ids=x[0], attention_mask=x[1])  # one untimed call, like a warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(input_ids=x[0], attention_mask=x[1])
            n += 1
        return n * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model and short arms")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each arm")
    args = ap.parse_args()
    model_name = "distilbert-tiny" if args.quick else "distilbert-base-uncased"
    seconds = 0.5 if args.quick else args.seconds
    rounds = 2 if args.quick else args.rounds
    batch, seq = 8, 128
    torch.set_num_threads(2)
    built = build_model(model_name, 2, "cpu", "fp32", seed=0)
    workload = InferenceWorkload(built, batch, seq, seed=0)
    x = workload.preprocess(0)
    cfg = MeasureConfig(warmup_iters=1, warmup_s=0.0, min_time_s=seconds, min_iters=2,
                        max_time_s=seconds, target_ci=1e-9)  # run the full arm, like the bare loop
    ratios = []
    for r in range(rounds):
        m = Runner(cfg).run(workload)
        harness = summarize(m.raw_ns, batch)["forward_throughput_sps"]
        bare = bare_forward_sps(built.model, x, batch, seconds)
        ratios.append(harness / bare)
        print(f"round {r + 1}: mpibench {harness:9.2f} samples/s  bare {bare:9.2f} samples/s  "
              f"ratio {harness / bare:.3f}", flush=True)
    print(f"{model_name} fp32 batch {batch} seq {seq}, 2 threads, {rounds} rounds of {seconds:.1f} s per arm")
    print(f"harness_overhead_ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
