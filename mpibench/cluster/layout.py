"""Who runs where, one table the same on every rank: built once, by one allgather, after binding."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mpi4py import MPI

from mpibench.cluster.topology import Binding, Topology, format_cores, measures
from mpibench.placement import Placement


@dataclass(frozen=True)
class Layout:
    """The rank -> (node, host) table, which ranks measure, and which had their hardware alone.

    Energy counts as a task's own only where its rank had the hardware alone: its node's CPUs
    (isolation `node`, or the only measuring rank there) and its GPU (no more measuring ranks on
    its node than GPUs it sees). Never add up whole-machine readings of several ranks of a node.
    """

    nodes: tuple[int, ...]  # rank -> node index
    hosts: tuple[str, ...]  # rank -> host name
    cpu_exclusive: tuple[bool, ...]  # rank -> had its node's CPUs to itself
    gpu_exclusive: tuple[bool, ...]  # rank -> had its GPU to itself
    oversubscribed: bool  # more measuring ranks than cores on some node

    @classmethod
    def gather(cls, comm: MPI.Comm, topo: Topology, binding: Binding, isolation: str, gpus: int) -> Layout:
        """Collective over comm; `gpus`: how many GPUs this rank sees (0 where it never needs one)."""
        return cls.of(comm.allgather((topo.node, topo.host, binding.oversubscribed, gpus)), isolation)

    @classmethod
    def of(cls, facts: list[tuple[int, str, bool, int]], isolation: str) -> Layout:
        """The table from every rank's (node, host, oversubscribed, gpus), in rank order."""
        size = len(facts)
        per_node = Counter(node for r, (node, *_) in enumerate(facts) if measures(r, size))
        sharing = [max(1, per_node[node]) for node, *_ in facts]  # measuring ranks on each rank's node
        alone = isolation == "node"
        return cls(nodes=tuple(f[0] for f in facts), hosts=tuple(f[1] for f in facts),
                   cpu_exclusive=tuple(alone or n == 1 for n in sharing),
                   gpu_exclusive=tuple(alone or n <= max(1, f[3]) for n, f in zip(sharing, facts)),
                   oversubscribed=any(f[2] for f in facts))

    @property
    def size(self) -> int:
        return len(self.nodes)

    def measures(self, rank: int) -> bool:
        return measures(rank, self.size)

    @property
    def workers(self) -> list[tuple[int, int]]:
        """(node, rank) of every measuring rank."""
        return [(node, r) for r, node in enumerate(self.nodes) if self.measures(r)]

    @property
    def rank_hosts(self) -> dict[int, str]:
        return dict(enumerate(self.hosts))

    def placement(self, topo: Topology, binding: Binding) -> Placement:
        """What this rank's measurements depend on: where it runs and what it had to itself."""
        r = topo.rank
        return Placement(rank=r, host=self.hosts[r], threads=binding.threads, cores=format_cores(binding.cores),
                         gpu_index=topo.measuring_index, cpu_exclusive=self.cpu_exclusive[r],
                         gpu_exclusive=self.gpu_exclusive[r])
