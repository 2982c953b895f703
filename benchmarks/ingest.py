"""How many results per second rank 0 stores: the coordinator's ceiling without MPI, and a whole run's rate.

1. Ingest (no MPI): realistic results (every /tasks column filled, 1,000 raw samples x 4 phases, an
   energy trace of 40 counter samples) go through the same Recorder rank 0 uses, as fast as it takes
   them, into a fresh file; the clock stops once the last one is durable (the file closed). Its
   reciprocal is rank 0's cost per result. With tasks of T seconds, one coordinator keeps about
   rate x T ranks busy.
2. End to end: a real `mpirun -n 16 python -m mpibench.run` (the script starts it) of 1,000 synthetic
   tasks of about 1 ms each (25 batch sizes x 40 sequence lengths, no warm-up, --min-time/--max-time
   0.001): rows in the run's own file divided by (last end_time - first start_time), so mpirun's start
   and the ranks' imports are left out (the wall time with them is printed beside it). Results per
   second of the whole pipeline: workers measuring, pickling, rank 0 receiving, group commits, flushes.
   MPIBENCH_PROFILE=FILE runs rank 0 of it under cProfile and writes the statistics to FILE.

Lines: `e2e_results_per_s: X` (goal >= 500 on 2 cores), then last `ingest_results_per_s: X` (goal >= 2000).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mpibench
from mpibench.recorder import COMMIT_WINDOW_S, Recorder
from mpibench.result import RESULT_COLUMNS, Result
from mpibench.stats import PHASES
from mpibench.store import Store
from mpibench.task import Task

_TEXT = {"status": "ok", "message": "", "weights": "random-init", "precision_mode": "cast",
         "preprocess_mode": "inline", "device_name": "Intel(R) Xeon(R) Platinum 8480+", "bound_device": "cpu",
         "cores": "0-27", "percentile_note": "", "server_search": "", "peak_source": "estimate: avx512 fma",
         "energy_status": "ok", "energy_method": "counter", "host": "node0042"}


def results(n: int, samples: int, seed: int = 0) -> list[Result]:
    """n results as workers send them: every column, raw samples and a counter trace."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        task = Task(i, "distilbert-base-uncased", "cpu", ("fp32", "bf16")[i % 2], 2 ** (i % 8), 128, 4)
        metrics = {c.name: (_TEXT.get(c.name, "") if c.dtype == "str" else
                            bool(rng.random() < 0.98) if c.dtype == "?" else
                            int(rng.integers(1, 1000)) if c.dtype == "i8" else float(rng.random() * 100))
                   for c in RESULT_COLUMNS if c.name not in ("rank", "host", "status", "message", "raw_offset",
                                                             "raw_count", "start_time", "end_time")}
        raw = {p: rng.integers(10_000, 5_000_000, samples, dtype=np.int64) for p in PHASES}
        t0 = time.time()
        trace = [(t0 + k * 0.05, f"cpu-package-{k % 2}", 1000.0 + k) for k in range(40)]
        out.append(Result(task, "ok", 1 + i % 15, "node0042", metrics=metrics, raw_ns=raw, energy_trace=trace))
    return out


def measure(batch: list[Result], directory: Path, name: str) -> float:
    """Results per second from the first append to the closed file."""
    store = Store.create(directory / f"{name}.h5", {"config_yaml": "{}"}, [{"host": "node0042"}])
    recorder = Recorder(store, window_s=COMMIT_WINDOW_S)  # as rank 0 of a multi-rank run
    t0 = time.perf_counter()
    for r in batch:
        recorder(r)
    recorder.close(complete=True)
    return len(batch) / (time.perf_counter() - t0)


def e2e_args(n_batch: int, n_seq: int, output: Path) -> list[str]:
    """n_batch x n_seq synthetic tasks of about 1 ms each (forward: batch x seq microseconds)."""
    return ["--model", "synthetic", "--batch-sizes", ",".join(map(str, range(1, n_batch + 1))),
            "--seq-lens", ",".join(map(str, range(1, n_seq + 1))), "--warmup-s", "0", "--warmup", "0",
            "--min-time", "0.001", "--max-time", "0.001", "--min-iters", "2", "--target-ci", "0.5",
            "--energy", "none", "--energy-idle-s", "0", "--output", str(output), "--overwrite"]


def end_to_end(ranks: int, n_batch: int, n_seq: int, directory: Path) -> tuple[float, float, int]:
    """One real run under mpirun: (results/s from the file's own times, wall seconds, rows)."""
    from mpibench.store import read_tasks

    out = directory / "e2e.h5"
    root = str(Path(mpibench.__file__).resolve().parent.parent)  # the mpibench this script imported
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = ["mpirun", "--oversubscribe", "-n", str(ranks), sys.executable, __file__, "--as-rank",
           *e2e_args(n_batch, n_seq, out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the end-to-end run failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    t = read_tasks(out)
    rows = len(t["task_id"])
    span = float(t["end_time"].max() - t["start_time"].min())
    return rows / span, wall, rows


def as_rank(run_args: list[str]) -> int:
    """One rank of the end-to-end run: `python -m mpibench.run`, rank 0 under cProfile if asked."""
    from mpibench.run import main as run_main

    profile = os.environ.get("MPIBENCH_PROFILE")
    if not profile or os.environ.get("OMPI_COMM_WORLD_RANK", "0") != "0":
        return run_main(run_args)
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(run_main, run_args)
    finally:
        prof.dump_stats(profile)


def main() -> int:
    if sys.argv[1:2] == ["--as-rank"]:
        return as_rank(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=1000, help="raw samples per phase and result")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=16, help="end to end: MPI ranks (rank 0 coordinates)")
    ap.add_argument("--tasks", type=int, default=1000,
                    help="end to end: tasks (rounded down to n x 40, below 400 to n x 10; n <= 25 keeps them ~1 ms)")
    ap.add_argument("--no-e2e", action="store_true", help="only the ingest measurement (no mpirun)")
    ap.add_argument("--quick", action="store_true",
                    help="300 results, 1 round; end to end 4 ranks, 100 tasks (CI smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.results, args.rounds, args.ranks, args.tasks = 300, 1, 4, 100
    if not args.no_e2e:
        n_seq = 40 if args.tasks >= 400 else 10
        n_batch = max(1, args.tasks // n_seq)
        with tempfile.TemporaryDirectory() as tmp:
            rate, wall, rows = end_to_end(args.ranks, n_batch, n_seq, Path(tmp))
        print(f"end to end: {rows} synthetic tasks on {args.ranks} ranks: {rate:.0f} results/s from the file "
              f"(rows / (last end_time - first start_time)); {wall:.1f} s wall with mpirun's start and the "
              f"ranks' imports ({rows / wall:.0f} results/s)")
        print(f"e2e_results_per_s: {rate:.0f}")
    batch = results(args.results, args.samples)
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            rates.append(measure(batch, Path(tmp), f"round{k}"))
            print(f"round {k + 1}: {rates[-1]:.0f} results/s ({1e3 / rates[-1]:.3f} ms per result)")
    best = max(rates)
    print(f"one coordinator keeps busy about {best:.0f} ranks at 1 s tasks, {best * 10:.0f} at 10 s, "
          f"{best * 60:.0f} at 60 s")
    print(f"ingest_results_per_s: {best:.0f}" if math.isfinite(best) else "ingest_results_per_s: 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
