"""`--mode scaling`: the same task on 1, 2, 4, ... ranks at once (and on 1, 2, ... whole nodes).

Every rank takes part in every step so that the windows line up: the participants warm up, all
ranks meet in a barrier, the participants measure for the same fixed window (`min_time_s`), all
ranks meet again, and rank 0 gathers the figures. Aggregate throughput is the sum over the
participants; parallel efficiency is aggregate / (k x the one-rank throughput).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from mpi4py import MPI

from mpibench.cluster.mpi import quiet_barrier
from mpibench.cluster.topology import format_cores
from mpibench.config import Config
from mpibench.plan import Task
from mpibench.result import Result


@dataclass(frozen=True)
class Group:
    ranks: tuple[int, ...]
    n_nodes: int
    by: str  # "ranks" or "nodes"


def groups(workers: list[tuple[int, int]]) -> list[Group]:
    """Rank counts 1, 2, 4, ..., all (filling nodes in order), then 1, 2, ... whole nodes.

    `workers` are (node, rank) pairs of the measuring ranks.
    """
    order = [r for _, r in sorted(workers)]
    node_of = dict((r, n) for n, r in workers)
    counts = sorted({2 ** i for i in range(int(math.log2(len(order))) + 1)} | {len(order)})
    out = [Group(tuple(order[:k]), len({node_of[r] for r in order[:k]}), "ranks") for k in counts]
    nodes = sorted({n for n, _ in workers})
    if len(nodes) > 1:
        for j in range(1, len(nodes) + 1):
            ranks = tuple(r for n, r in sorted(workers) if n in nodes[:j])
            out.append(Group(ranks, j, "nodes"))
    return out


def window(cfg: Config):
    """A fixed window: every participant measures for exactly min_time_s (never stops early)."""
    return cfg.measure.model_copy(update={"max_time_s": max(cfg.measure.min_time_s, 1e-3),
                                          "target_ci": 1e-12, "min_iters": 2})


def run_scaling(comm: MPI.Comm, cfg: Config, tasks: list[Task], executor, workers: list[tuple[int, int]],
                lead: Callable[[Task, Group, list], None] | None = None,
                stop: Callable[[], object] = lambda: None) -> bool:
    """Collective over all ranks: every step of every task. Rank 0 hands each step's Results to `lead`.

    Before each step the ranks agree whether any of them was asked to stop; True if the run stopped."""
    measure = window(cfg)
    plan = groups(workers)
    for task in tasks:
        for g in plan:
            if comm.allreduce(bool(stop()), op=MPI.LOR):
                return True
            results = comm.gather(_step(comm, g, task, executor, measure), root=0)
            if lead is not None:
                lead(task, g, results)
    return False


def _step(comm: MPI.Comm, g: Group, task: Task, executor, measure) -> Result | None:
    """One window: the participants warm up, all ranks align, the participants measure, all meet."""
    result, aligned = None, []

    def align() -> None:  # the start of the window, after each participant's warm-up
        quiet_barrier(comm)
        aligned.append(True)

    if comm.rank in g.ranks:
        result = executor.run(task, measure, before_measure=align)
        result.metrics["scaling_ranks"] = len(g.ranks)
    if not aligned:  # not taking part, or failed before measuring
        align()
    quiet_barrier(comm)  # the end of the window
    return result


class StepRecorder:
    """Rank 0: records every participant's Result and one /scaling row per step."""

    def __init__(self, record: Callable[[Result], None], record_scaling: Callable[[dict], None], window_s: float):
        self.record, self.record_scaling, self.window_s = record, record_scaling, window_s
        self.base: dict[int, float] = {}  # task id -> its one-rank throughput

    def __call__(self, task: Task, g: Group, results: list) -> None:
        mine = [r for r in results if r is not None]
        for r in mine:
            self.record(r)
        ok = [r for r in mine if r.status == "ok"]
        per_rank = [r.metrics["throughput_sps"] for r in ok]
        aggregate = sum(per_rank) if len(ok) == len(g.ranks) else math.nan
        if len(g.ranks) == 1 and g.by == "ranks":
            self.base[task.task_id] = aggregate
        self.record_scaling({
            "task_id": task.task_id, **task.dimensions(),
            "threads": ok[0].metrics["threads"] if ok else task.threads, "by": g.by,
            "n_ranks": len(g.ranks), "n_nodes": g.n_nodes, "ranks": format_cores(g.ranks),
            "window_s": self.window_s, "aggregate_throughput_sps": aggregate,
            "per_rank_throughput_sps": aggregate / len(g.ranks),
            "min_rank_throughput_sps": min(per_rank, default=math.nan),
            "max_rank_throughput_sps": max(per_rank, default=math.nan),
            "efficiency": aggregate / (len(g.ranks) * self.base.get(task.task_id, math.nan)),
            "status": "ok" if len(ok) == len(g.ranks) else
                      "interrupted" if any(r.status == "interrupted" for r in mine) else "failed",
        })
