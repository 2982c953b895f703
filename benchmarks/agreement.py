"""Agreement: the forward latency mpibench reports vs torch.utils.benchmark's adaptive_autorange.

Two independent ways of timing the same forward pass (same model, same inputs, same threads) should
give the same median; a gap would mean the harness adds or hides time. The arms run in this one
process, alternately (the order flips every round), so machine noise hits both alike. Each arm's
figure is the median over rounds of its per-round median; the difference is the median over rounds of
the paired ratio mpibench / torch, minus 1 (pairs cancel the load drifting between rounds).

torch's Timer runs forward passes back to back over ready inputs; mpibench does the same with
`--preprocess ahead` (the batches tokenised before timing, as MLPerf pre-loads its samples), and that
arm gives the headline, `agreement_max_rel_diff: X`, the largest |mpibench - torch| / torch over the
configurations. torch's figure is a median of block means (10 calls a block at 1 ms a call), so on
a right-skewed latency distribution it sits a little above mpibench's per-call median.

A third arm, mpibench's default `--preprocess inline`, tokenises each batch inside the timed loop, as
a deployment does; the forward pass that follows is slower where the model is small (its weights
leave the caches and the second core falls idle while the single-threaded tokeniser runs), a real
effect of the pipeline, printed as `inline_max_rel_diff` on the line before.

    python benchmarks/agreement.py            # distilbert-base b1 and b8, distilbert-tiny b1 and b8, seq 128
    python benchmarks/agreement.py --quick    # the tiny model only, a few seconds (CI smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics

import numpy as np
import torch
from torch.utils.benchmark import Timer

from mpibench.config import MeasureConfig
from mpibench.inference.model import InferenceWorkload, build_model
from mpibench.inference.runner import Runner

THREADS, SEQ = 2, 128
FULL = [("distilbert-base-uncased", 1), ("distilbert-base-uncased", 8), ("distilbert-tiny", 1),
        ("distilbert-tiny", 8)]
QUICK = [("distilbert-tiny", 1), ("distilbert-tiny", 8)]
ARMS = ("ahead", "inline", "torch")


def mpibench_ms(workload: InferenceWorkload, measure: MeasureConfig) -> float:
    """The median of the forward phase, as a task row reports it."""
    m = Runner(measure).run(workload)
    return float(np.median(m.raw_ns["forward"])) / 1e6


def torch_ms(workload: InferenceWorkload, measure: MeasureConfig) -> float:
    """adaptive_autorange's median over the workload's own tokenised batches and forward call,
    measuring at least as long as mpibench does (its own minimum, 0.01 s, leaves a handful of noisy
    blocks)."""
    batches = itertools.cycle(workload.ready)
    timer = Timer("forward(next(batches))", globals={"forward": workload.forward, "batches": batches},
                  num_threads=THREADS)
    return timer.adaptive_autorange(min_run_time=measure.min_time_s,
                                    max_run_time=measure.max_time_s).median * 1e3


def measure_rounds(configs, measure: MeasureConfig, rounds: int) -> list[dict[str, list[float]]]:
    """Per configuration and arm, one median (ms) per round; the arms' order flips every round."""
    torch.set_num_threads(THREADS)
    models = {name: build_model(name, 2, "cpu", "fp32", seed=0) for name in dict(configs)}
    out = []
    for name, batch in configs:
        inline = InferenceWorkload(models[name], batch, SEQ, seed=0)
        ahead = InferenceWorkload(models[name], batch, SEQ, seed=0, ahead=True)
        out.append({"ahead": lambda w=ahead: mpibench_ms(w, measure),
                    "inline": lambda w=inline: mpibench_ms(w, measure),
                    "torch": lambda w=ahead: torch_ms(w, measure)})
    res = [{a: [] for a in ARMS} for _ in configs]
    for r in range(rounds):
        for (name, batch), fns, got in zip(configs, out, res):
            for a in ARMS if r % 2 == 0 else ARMS[::-1]:
                got[a].append(fns[a]())
            print(f"round {r + 1}: {name} b{batch}: "
                  + "  ".join(f"{a} {got[a][-1]:9.3f} ms" for a in ARMS), flush=True)
    return res


def rel_diff(a: list[float], b: list[float]) -> float:
    """|median of the paired ratios a/b - 1|: pairs taken seconds apart share the machine's load."""
    return abs(statistics.median(x / y for x, y in zip(a, b)) - 1)


def fmt(x: float) -> str:
    """Three decimals; more only where three would round a real difference down to zero."""
    return f"{x:.3f}" if x >= 5e-4 else f"{x:.6f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model and short arms")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-time", type=float, default=6.0,
                    help="seconds per arm at most (mpibench's max_time_s, torch's max_run_time)")
    args = ap.parse_args()
    configs = QUICK if args.quick else FULL
    rounds, max_time = (2, 1.0) if args.quick else (args.rounds, args.max_time)
    measure = MeasureConfig(max_time_s=max_time, min_time_s=min(MeasureConfig().min_time_s, max_time))
    if args.quick:
        measure = measure.model_copy(update=dict(warmup_s=0.1, min_time_s=0.3))
    res = measure_rounds(configs, measure, rounds)

    worst = {"ahead": 0.0, "inline": 0.0}
    for (name, batch), got in zip(configs, res):
        med = {a: statistics.median(got[a]) for a in ARMS}
        rel = {a: rel_diff(got[a], got["torch"]) for a in worst}
        worst = {a: max(worst[a], rel[a]) for a in worst}
        print(f"{name} fp32 batch {batch} seq {SEQ}, {THREADS} threads: mpibench {med['ahead']:.3f} ms  "
              f"torch {med['torch']:.3f} ms  rel_diff {rel['ahead']:.3f}  (inline preprocess: "
              f"{med['inline']:.3f} ms, rel_diff {rel['inline']:.3f})")
    print(f"{rounds} rounds, arms alternated; mpibench: default MeasureConfig but max_time_s={max_time:g}; "
          f"torch: adaptive_autorange(min_run_time={measure.min_time_s:g}, max_run_time={max_time:g})")
    print("load average (1, 5, 15 min) at the end: %.1f %.1f %.1f" % os.getloadavg())
    print(f"inline_max_rel_diff: {fmt(worst['inline'])}")
    print(f"agreement_max_rel_diff: {fmt(worst['ahead'])}")


if __name__ == "__main__":
    main()
