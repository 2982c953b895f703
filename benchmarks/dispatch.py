"""Dispatch quality and speed of the coordinator, on synthetic (sleeping) tasks.

1. 200 tasks with log-uniform durations (10 ms - 2 s) on 16 ranks (15 workers): the makespan of
   mpibench's dynamic, longest-first dispatch and of a one-shot round-robin scatter, each divided by
   the lower bound max(sum(durations) / workers, max(duration)).
2. How many zero-length tasks per second rank 0 hands out and collects.

Last lines: `dispatch_rate_tasks_per_s: X`, then `dispatch_makespan_ratio: X` (goal <= 1.10).
Run as `python benchmarks/dispatch.py` (it starts `mpirun -n 16` itself) or under your own launcher.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import numpy as np


def launch(argv: list[str], n: int) -> int:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "-n", str(n), sys.executable, __file__, *argv]
    return subprocess.call(cmd, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=16)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--max-s", type=float, default=2.0, help="longest task duration")
    ap.add_argument("--rate-tasks", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="4 ranks, 40 short tasks (CI smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.ranks, args.tasks, args.max_s, args.rate_tasks = 4, 40, 0.2, 500
    if "OMPI_COMM_WORLD_SIZE" not in os.environ and "PMI_SIZE" not in os.environ:
        return launch(sys.argv[1:], args.ranks)

    from mpi4py import MPI

    from mpibench.cluster.coordinator import Coordinator
    from mpibench.cluster.mpi import quiet_barrier
    from mpibench.cluster.worker import serve
    from mpibench.plan import Task
    from mpibench.result import Result
    from mpibench.stopping import StopFlag

    comm = MPI.COMM_WORLD
    workers = comm.size - 1
    host = socket.gethostname()
    rng = np.random.default_rng(42)
    durations = np.exp(rng.uniform(np.log(0.01), np.log(args.max_s), args.tasks))
    tasks = [Task(i, "synthetic", "cpu", "fp32", 1, 1, 1, est_cost_s=float(d)) for i, d in enumerate(durations)]

    def execute(task: Task) -> Result:
        time.sleep(task.est_cost_s)
        return Result(task, "ok", comm.rank, host)

    def timed(fn) -> float:
        quiet_barrier(comm)
        t0 = time.perf_counter()
        fn()
        quiet_barrier(comm)
        return time.perf_counter() - t0

    def dynamic(task_list):
        def go():
            if comm.rank == 0:
                Coordinator(comm, lambda r: None, StopFlag()).run(task_list)
            else:
                serve(comm, execute)
        return go

    def scatter():
        parts = comm.scatter([[]] + [tasks[w::workers] for w in range(workers)] if comm.rank == 0 else None)
        for t in parts:
            execute(t)

    t_dynamic = timed(dynamic(tasks))
    t_scatter = timed(scatter)
    zero = [Task(i, "synthetic", "cpu", "fp32", 1, 1, 1, est_cost_s=0.0) for i in range(args.rate_tasks)]
    t_rate = timed(dynamic(zero))
    if comm.rank == 0:
        bound = max(durations.sum() / workers, durations.max())
        print(f"{args.tasks} tasks, durations {durations.min():.3f}-{durations.max():.3f} s "
              f"(sum {durations.sum():.1f} s), {workers} workers; lower bound {bound:.2f} s")
        print(f"dynamic longest-first: makespan {t_dynamic:.2f} s, ratio {t_dynamic / bound:.3f}")
        print(f"round-robin scatter:   makespan {t_scatter:.2f} s, ratio {t_scatter / bound:.3f}")
        print(f"zero-length tasks: {args.rate_tasks} in {t_rate:.2f} s")
        print(f"dispatch_rate_tasks_per_s: {args.rate_tasks / t_rate:.0f}")
        print(f"dispatch_makespan_ratio: {t_dynamic / bound:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
