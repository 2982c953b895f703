"""Where every rank runs: node communicator, local rank, node numbering, core binding, host facts."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from mpi4py import MPI

from mpibench.gemm import GemmPlan, gemm_peaks
from mpibench.hostinfo import cpu_model, memory_gib, nvml_gpus
from mpibench.cluster.mpi import quiet_barrier

if TYPE_CHECKING:
    from mpibench.energy import IdlePower


def measures(rank: int, size: int) -> bool:
    """Rank 0 only coordinates when there are other ranks to measure; alone, it measures too."""
    return size == 1 or rank != 0


@dataclass(frozen=True)
class Topology:
    rank: int
    size: int
    host: str
    node: int  # node index, 0..n_nodes-1, by the lowest world rank on it
    n_nodes: int
    local_rank: int
    local_size: int
    node_ranks: tuple[int, ...]  # world ranks on this node
    cores: int  # CPUs this rank may run on (its affinity mask)
    node_cores: tuple[int, ...]  # CPUs any rank of this node may run on (the union of their masks)

    @property
    def is_node_leader(self) -> bool:
        return self.local_rank == 0

    @property
    def measuring_node_ranks(self) -> tuple[int, ...]:
        """Ranks on this node that measure: all but rank 0 when rank 0 only coordinates."""
        return tuple(r for r in self.node_ranks if measures(r, self.size))

    @property
    def measuring_ranks_on_node(self) -> int:
        return max(1, len(self.measuring_node_ranks))

    def default_threads(self) -> int:
        """The rank's fair share of its node's cores."""
        return max(1, self.cores // self.measuring_ranks_on_node)

    @property
    def measuring_index(self) -> int:
        """This rank's place among the measuring ranks of its node (GPU and core-slice choice)."""
        measuring = self.measuring_node_ranks
        return measuring.index(self.rank) if self.rank in measuring else 0


def discover(comm: MPI.Comm) -> Topology:
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    mine = os.sched_getaffinity(0)
    node = node_comm.allgather((comm.rank, mine))
    node_comm.Free()
    node_ranks = tuple(r for r, _ in node)
    leaders = sorted(set(comm.allgather(min(node_ranks))))
    return Topology(
        rank=comm.rank, size=comm.size, host=socket.gethostname(),
        node=leaders.index(min(node_ranks)), n_nodes=len(leaders),
        local_rank=node_ranks.index(comm.rank), local_size=len(node_ranks),
        node_ranks=node_ranks, cores=len(mine), node_cores=tuple(sorted(set().union(*(c for _, c in node)))),
    )


def host_facts(topo: Topology, energy_backend: str, idle_s: float, stop: Callable[[], object] = lambda: None,
               gemm: GemmPlan | None = None) -> dict:
    """One /hosts row, collected by a node's leader while every rank waits: its idle power, then (with a
    plan) the GEMM peak of its devices, measured on the leader's own cores.

    A counter that stood still at idle is said on stderr too.
    """
    idle = idle_power(energy_backend, idle_s, stop)  # first: a GEMM warms the node up
    if idle.status == "stuck":
        print(f"mpibench: {topo.host}: energy counters stuck: {idle.reason}", file=sys.stderr)
    return {
        "host": topo.host,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_gib": memory_gib(),
        "gpus": json.dumps(nvml_gpus()),
        "ranks": ",".join(map(str, topo.node_ranks)),
        "idle_power_w": json.dumps({d: (None if math.isnan(w) else round(w, 3)) for d, w in idle.watts.items()}),
        "energy_status": idle.status,
        "energy_reason": idle.reason,
        "gemm_tflops": json.dumps(gemm_peaks(gemm, stop) if gemm else {}),
    }


def idle_power(backend: str, seconds: float, stop: Callable[[], object] = lambda: None) -> IdlePower:
    """Host idle power per domain (the CPU counters; GPUs idle at their own floor), the status and its
    reason (``stuck``: a counter stood still); a stop request ends the measurement early (the power is
    over the shorter window)."""
    from mpibench.energy import IdlePower, make_meter, measure_idle
    from mpibench.stopping import sleep_unless

    meter = make_meter("none" if backend == "none" else "auto")  # never fails; --energy is checked later
    try:
        a = meter.available()
        if not a.ok or seconds <= 0:
            return IdlePower({}, a.status, "" if a.ok else a.reason)
        return measure_idle(meter, seconds, sleep=lambda s: sleep_unless(stop, s))
    finally:
        meter.close()


def gather_hosts(comm: MPI.Comm, topo: Topology, energy_backend: str, idle_s: float,
                 stop: Callable[[], object] = lambda: None, gemm: GemmPlan | None = None) -> list[dict] | None:
    """Every node's facts at rank 0 (None elsewhere), in node order. Collective over comm.

    The other ranks sleep in a quiet barrier while the leaders measure idle power and GEMM peaks: a
    blocking gather would spin on their cores, count in the idle baseline and slow the GEMM.
    """
    facts = host_facts(topo, energy_backend, idle_s, stop, gemm) if topo.is_node_leader else None
    quiet_barrier(comm)
    rows = comm.gather((topo.node, facts), root=0)
    if comm.rank != 0:
        return None
    return [f for _, f in sorted((n, f) for n, f in rows if f is not None)]


@dataclass(frozen=True)
class Binding:
    cores: tuple[int, ...]  # the CPUs this rank runs on
    threads: int  # default intra-op threads
    oversubscribed: bool  # more measuring ranks than cores on the node


def split_cores(node_cores: list[int], n_ranks: int, index: int, isolation: str) -> tuple[tuple[int, ...], bool]:
    """Disjoint, contiguous core slices for the measuring ranks of one node.

    `node`: every rank may use the whole node (they take turns); `device`: rank i gets slice i;
    more ranks than cores: one core each, round robin, flagged as oversubscribed.
    """
    cores = sorted(node_cores)
    if isolation == "node" or n_ranks <= 1:
        return tuple(cores), False
    if n_ranks > len(cores):
        return (cores[index % len(cores)],), True
    base, extra = divmod(len(cores), n_ranks)
    start = index * base + min(index, extra)
    return tuple(cores[start:start + base + (1 if index < extra else 0)]), False


def bind(topo: Topology, isolation: str) -> Binding:
    """Pin each measuring rank to its core slice of the node's cores (`discover` gathered them);
    rank 0 is left alone."""
    if isolation == "none" or topo.rank not in topo.measuring_node_ranks:
        mine = tuple(sorted(os.sched_getaffinity(0)))
        return Binding(mine, topo.default_threads(), False)
    cores, over = split_cores(topo.node_cores, topo.measuring_ranks_on_node, topo.measuring_index, isolation)
    os.sched_setaffinity(0, cores)
    return Binding(cores, len(cores), over)


def format_cores(cores) -> str:
    """0,1,2,3,8 -> "0-3,8" (cores, or ranks)."""
    out, run = [], []
    for c in sorted(cores):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
