#!/usr/bin/env python
"""Offline analysis at scale: a synthetic run of 10,000 tasks and 10,000,000 raw samples, analysed whole.

    python benchmarks/analysis_scale.py            # 10,000 tasks x 1,000 samples (~320 MiB file)
    python benchmarks/analysis_scale.py --quick    # 200 tasks x 500 samples: a smoke run for CI

Builds the file (bulk writes: `Store.append_many`), then runs exactly what
`python -m mpibench.analyze` runs: load with raw statistics streamed in blocks, batch profile, optimum,
every figure, report.md/.html and optimal.json. Prints the time of each step, the peak memory of this
process (building included, so an upper bound), and last the headline figure:
`analysis_seconds_per_million_samples` (goal for memory: under 1 GiB).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mpibench.analysis import analyze, write_all
from mpibench.analysis import synthetic as S
from mpibench.store import Store

DEVICES = ("cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3")
PRECISIONS = ("fp32", "bf16")
BATCH_SIZES = tuple(2 ** k for k in range(10))  # 1 .. 512
SEQ_LENS = (32, 64, 128, 256, 512)
THREADS = (1, 2, 4, 8, 14, 16, 28, 32, 56, 112)
MODELS = ("distilbert-base-uncased", "distilbert-tiny")
BLOCK_TASKS = 500


def configs(n: int) -> list[dict]:
    combos = itertools.product(MODELS, DEVICES, PRECISIONS, SEQ_LENS, THREADS, BATCH_SIZES)
    keys = ("model", "device", "precision", "seq_len", "threads", "batch_size")
    return [dict(zip(keys, c)) for c in itertools.islice(combos, n)]


def build(path: Path, n_tasks: int, samples: int, seed: int = 0) -> None:
    """The synthetic run file: n_tasks x samples raw samples in all; 1 % of the tasks fail or run out of
    memory (their share of samples goes to the others) and 2 % do not converge, as in life."""
    rng = np.random.default_rng(seed)
    fate = rng.random(n_tasks)
    counts = np.where(fate < 0.01, 0, samples)
    ok = np.flatnonzero(counts)
    deficit = n_tasks * samples - counts.sum()
    counts[ok] += deficit // max(1, len(ok))
    counts[ok[: deficit % max(1, len(ok))]] += 1
    store = Store.create(path, S.attrs(world_size=400), S.hosts(100, gpus=4), overwrite=True)
    cfgs = configs(n_tasks)
    for start in range(0, len(cfgs), BLOCK_TASKS):
        rows, raws = [], []
        for task_id, cfg in enumerate(cfgs[start:start + BLOCK_TASKS], start):
            where = {"host": f"node{task_id % 100 + 1:03d}", "rank": task_id % 400}
            if counts[task_id] == 0:
                rows.append(S.task_row(task_id, cfg, None, status="oom" if fate[task_id] < 0.005 else "failed",
                                       message=f"rank {where['rank']} on {where['host']}: synthetic", **where))
                raws.append(None)
                continue
            means = S.phase_means_ms(cfg["device"].split(":")[0], cfg["precision"], cfg["batch_size"],
                                     cfg["seq_len"])
            raw = S.sample_raw(means, int(counts[task_id]), rng)
            rows.append(S.task_row(task_id, cfg, raw, converged=fate[task_id] > 0.03,
                                   power_w=250.0 if cfg["device"] == "cpu" else None, **where))
            raws.append(raw)
        store.append_many(rows, raws)
    store.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 tasks x 500 samples (a smoke run)")
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=1_000, help="raw samples per task")
    p.add_argument("--keep", metavar="DIR", help="keep the file and the analysis in DIR")
    ns = p.parse_args(argv)
    n_tasks, samples = (200, 500) if ns.quick else (ns.tasks, ns.samples)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(ns.keep) if ns.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        path = work / "scale.h5"
        t0 = time.perf_counter()
        build(path, n_tasks, samples)
        t1 = time.perf_counter()
        a = analyze(path)
        t2 = time.perf_counter()
        files = write_all(a, work / "scale-analysis")
        t3 = time.perf_counter()
        n_samples = a.run.n_samples
        print(f"file: {len(a.tasks['task_id'])} tasks, {n_samples:,} raw samples, "
              f"{path.stat().st_size / 2**20:.0f} MiB, built in {t1 - t0:.1f} s")
        print(f"load, raw statistics streamed, batch profile, optimum: {t2 - t1:.2f} s")
        print(f"figures and report ({len(files)} files): {t3 - t2:.2f} s")
        print(f"analysis total: {t3 - t1:.2f} s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"peak_rss_mib: {peak_mib:.0f}")
    print(f"analysis_seconds_per_million_samples: {(t3 - t1) / (n_samples / 1e6):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
