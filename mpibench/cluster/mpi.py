"""Small MPI helpers: polling without stealing a core from the ranks that measure."""

from __future__ import annotations

import time
from typing import Callable

from mpi4py import MPI


class Backoff:
    """Exponential sleep between polls, capped at ~1 ms (mpi4py futures' Backoff)."""

    def __init__(self, start_s: float = 1e-5, cap_s: float = 1e-3):
        self.start_s, self.cap_s = start_s, cap_s
        self.delay = start_s

    def reset(self) -> None:
        self.delay = self.start_s

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.cap_s, self.delay * 2)


def wait(request: MPI.Request, backoff: Backoff | None = None) -> None:
    """Wait for a request by polling with back-off (a blocking Wait spins in Open MPI)."""
    backoff = backoff or Backoff()
    while not request.Test():
        backoff.sleep()


def quiet_barrier(comm: MPI.Comm) -> None:
    """A barrier that sleeps while it waits, so ranks that finished early leave the cores to the rest."""
    wait(comm.Ibarrier())



def recv_from(comm: MPI.Comm, source: int, tag: int, backoff: Backoff | None = None) -> object:
    """Blocking receive from one rank that sleeps between polls."""
    backoff = backoff or Backoff()
    status = MPI.Status()
    while not comm.Iprobe(source, tag, status):
        backoff.sleep()
    return comm.recv(source=source, tag=tag)
