"""Where a measuring rank runs, as the measuring side needs to know it (no MPI here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """The facts a rank's measurements depend on, decided once by the cluster layer.

    Energy counts as a task's own only where the rank had the hardware alone: its node's CPUs
    (`cpu_exclusive`: isolation node, or the only measuring rank there) and its GPU (`gpu_exclusive`).
    """

    rank: int = 0
    host: str = "localhost"
    threads: int = 1  # default intra-op threads: the rank's share of its node's cores
    cores: str = ""  # the CPUs it is pinned to, e.g. "0-3" ("" when not pinned)
    gpu_index: int = 0  # which visible GPU plain `cuda` means on this rank
    cpu_exclusive: bool = False
    gpu_exclusive: bool = True
