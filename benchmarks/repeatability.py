"""Repeatability: one configuration measured several times in a row, as a sweep would measure it.

With the default MeasureConfig each measurement reports a median end-to-end latency and its 95 % CI;
if the measurements hold up, the medians agree and each CI contains the other medians. Prints every
measurement, how often a CI held another's median, and as last line `repeatability_spread: X`
(max median / min median - 1). The MeasureConfig flags try other settings.

    python benchmarks/repeatability.py            # distilbert-base, fp32, batch 8, seq 128, 2 threads
    python benchmarks/repeatability.py --quick    # the tiny model, short measurements (CI smoke run)
    python benchmarks/repeatability.py --min-time 10 --warmup-s 5
"""

from __future__ import annotations

import argparse
import os

import torch

from mpibench.config import MeasureConfig
from mpibench.inference.model import InferenceWorkload, build_model
from mpibench.inference.runner import Runner
from mpibench.stats import summarize

FLAGS = {"--warmup": ("warmup_iters", int), "--warmup-s": ("warmup_s", float),
         "--min-time": ("min_time_s", float), "--min-iters": ("min_iters", int),
         "--max-time": ("max_time_s", float), "--target-ci": ("target_ci", float)}
QUICK = dict(warmup_iters=2, warmup_s=0.1, min_time_s=0.5, max_time_s=2.0)


def spread_and_coverage(rows: list[dict]) -> tuple[float, int, int]:
    """(max/min - 1 of the medians, CIs that held another's median, pairs asked)."""
    medians = [r["e2e_p50_ms"] for r in rows]
    held = sum(r["e2e_ci_low_ms"] <= m <= r["e2e_ci_high_ms"]
               for i, r in enumerate(rows) for j, m in enumerate(medians) if i != j)
    return max(medians) / min(medians) - 1, held, len(rows) * (len(rows) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model and short measurements")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="distilbert-base-uncased")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    for flag, (field, kind) in FLAGS.items():
        ap.add_argument(flag, dest=field, type=kind, help=f"MeasureConfig.{field} (default: "
                        f"{MeasureConfig.model_fields[field].default})")
    args = ap.parse_args()
    chosen = {f: getattr(args, f) for f, _ in FLAGS.values() if getattr(args, f) is not None}
    measure = MeasureConfig(**({**QUICK, **chosen} if args.quick else chosen))
    model = "distilbert-tiny" if args.quick else args.model
    torch.set_num_threads(args.threads)
    built = build_model(model, 2, "cpu", "fp32", seed=0)

    rows = []
    for k in range(args.repeats):
        workload = InferenceWorkload(built, args.batch, args.seq, seed=k)  # a new task, as in a sweep
        m = Runner(measure).run(workload)
        row = summarize(m.raw_ns, args.batch)
        rows.append(row)
        print(f"measurement {k + 1}: median {row['e2e_p50_ms']:9.3f} ms  95% CI "
              f"[{row['e2e_ci_low_ms']:.3f}, {row['e2e_ci_high_ms']:.3f}]  n {m.n_iters:4d}  "
              f"{m.measure_s:5.1f} s  converged {m.converged}", flush=True)
    spread, held, pairs = spread_and_coverage(rows)
    settings = ", ".join(f"{f}={getattr(measure, f)}" for f, _ in FLAGS.values())
    print(f"{model} fp32 batch {args.batch} seq {args.seq}, {args.threads} threads; {settings}")
    print(f"CIs that contained another measurement's median: {held}/{pairs}")
    print("load average (1, 5, 15 min) at the end: %.1f %.1f %.1f" % os.getloadavg())
    print(f"repeatability_spread: {spread:.4f}")


if __name__ == "__main__":
    main()
