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

A generate case puts mpibench's time to first token (preprocess ahead + h2d + prefill) and time per output
token (the mean decode step) beside a bare `model.generate` over the same prompts and threads, greedy with
end-of-sequence disabled (`eos_token_id=None`: every call makes its N tokens, as mpibench's do, without
the logits processor `min_new_tokens` would add to each step): its median call with one new token, and
(median with N - median with 1) / (N - 1) per further token; the line `generate_max_rel_diff: X` (goal
<= 0.05) comes before the last.

    python benchmarks/agreement.py            # distilbert-base b1 and b8, distilbert-tiny b1 and b8, seq 128
    python benchmarks/agreement.py --quick    # the tiny model only, a few seconds (CI smoke run)
    python benchmarks/agreement.py --generate-only --rounds 12   # the generate case alone (gpt2 b1 and b4)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import numpy as np
import torch
from torch.utils.benchmark import Timer

from mpibench.config import MeasureConfig
from mpibench.inference.generate import GenerateWorkload, generation_metrics
from mpibench.inference.model import InferenceWorkload, build_model
from mpibench.inference.runner import Runner
from mpibench.stats import summarize

THREADS, SEQ = 2, 128
FULL = [("distilbert-base-uncased", 1), ("distilbert-base-uncased", 8), ("distilbert-tiny", 1),
        ("distilbert-tiny", 8)]
QUICK = [("distilbert-tiny", 1), ("distilbert-tiny", 8)]
ARMS = ("ahead", "inline", "torch")
#: The generate case: (model, batch), prompt tokens, new tokens.
GEN_FULL, GEN_QUICK, GEN_SEQ, GEN_NEW = [("gpt2", 1), ("gpt2", 4)], [("llama-tiny", 1)], 64, 16


def mpibench_generate(workload: GenerateWorkload, measure: MeasureConfig) -> tuple[float, float]:
    """(TTFT p50, TPOT mean) in ms, as a generate row reports them."""
    m = Runner(measure).run(workload)
    g = generation_metrics(workload.steps[-m.n_iters:], m.raw_ns, summarize(m.raw_ns, workload.batch_size),
                           workload.batch_size, workload.seq_len, workload.new_tokens)
    return g["ttft_p50_ms"], g["tpot_mean_ms"]


def bare_generate(workload: GenerateWorkload, seconds: float) -> tuple[float, float]:
    """(TTFT, TPOT) in ms from `model.generate` alone: median calls of 1 and of N new tokens."""
    ids, mask = workload.ready[0]
    model = workload.built.model

    def median_ms(n: int) -> float:
        times, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 5:
            t0 = time.perf_counter_ns()
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, eos_token_id=None,
                               do_sample=False, pad_token_id=0)
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e6

    first, full = median_ms(1), median_ms(workload.new_tokens)
    return first, (full - first) / (workload.new_tokens - 1)


def generate_rounds(configs, measure: MeasureConfig, rounds: int) -> list[dict[str, list[float]]]:
    """Per configuration, per round: mpibench's and the bare loop's TTFT and TPOT, the order flipped each round."""
    torch.set_num_threads(THREADS)
    models = {name: build_model(name, 2, "cpu", "fp32", seed=0, workload="generate") for name in dict(configs)}
    res = []
    for name, batch in configs:
        w = GenerateWorkload(models[name], batch, GEN_SEQ, seed=0, new_tokens=GEN_NEW, ahead=True)
        got = {k: [] for k in ("ttft", "tpot", "bare_ttft", "bare_tpot")}
        for r in range(rounds):
            arms = [("", lambda: mpibench_generate(w, measure)), ("bare_", lambda: bare_generate(w, measure.min_time_s))]
            for prefix, fn in arms if r % 2 == 0 else arms[::-1]:
                ttft, tpot = fn()
                got[prefix + "ttft"].append(ttft)
                got[prefix + "tpot"].append(tpot)
            print(f"round {r + 1}: {name} b{batch} generate: TTFT {got['ttft'][-1]:.3f} vs {got['bare_ttft'][-1]:.3f} ms"
                  f"  TPOT {got['tpot'][-1]:.3f} vs {got['bare_tpot'][-1]:.3f} ms", flush=True)
        res.append(got)
    return res


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
    ap.add_argument("--generate-only", action="store_true", help="only the generate case (its line, then "
                    "the other two lines as nan)")
    ap.add_argument("--max-time", type=float, default=6.0,
                    help="seconds per arm at most (mpibench's max_time_s, torch's max_run_time)")
    args = ap.parse_args()
    configs = QUICK if args.quick else FULL
    rounds, max_time = (2, 1.0) if args.quick else (args.rounds, args.max_time)
    measure = MeasureConfig(max_time_s=max_time, min_time_s=min(MeasureConfig().min_time_s, max_time))
    if args.quick:
        measure = measure.model_copy(update=dict(warmup_s=0.1, min_time_s=0.3))
    res = [] if args.generate_only else measure_rounds(configs, measure, rounds)

    worst = {"ahead": float("nan"), "inline": float("nan")} if args.generate_only else {"ahead": 0.0, "inline": 0.0}
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
    gen_configs = GEN_QUICK if args.quick else GEN_FULL
    gen_worst = 0.0
    for (name, batch), got in zip(gen_configs, generate_rounds(gen_configs, measure, rounds)):
        ttft, tpot = rel_diff(got["ttft"], got["bare_ttft"]), rel_diff(got["tpot"], got["bare_tpot"])
        gen_worst = max(gen_worst, ttft, tpot)
        print(f"{name} fp32 batch {batch} prompt {GEN_SEQ}, {GEN_NEW} new tokens: TTFT mpibench "
              f"{statistics.median(got['ttft']):.3f} ms, model.generate {statistics.median(got['bare_ttft']):.3f} ms "
              f"(rel_diff {ttft:.3f}); TPOT {statistics.median(got['tpot']):.3f} vs "
              f"{statistics.median(got['bare_tpot']):.3f} ms (rel_diff {tpot:.3f})")
    print(f"generate_max_rel_diff: {fmt(gen_worst)}")
    print(f"inline_max_rel_diff: {fmt(worst['inline'])}")
    print(f"agreement_max_rel_diff: {fmt(worst['ahead'])}")


if __name__ == "__main__":
    main()
