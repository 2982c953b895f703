"""Every rank but 0: ask rank 0 for a Task, measure it, send the Result back, until told to stop."""

from __future__ import annotations

from typing import Callable

from mpi4py import MPI

from mpibench.cluster.coordinator import TAG_RESULT, TAG_STOP, TAG_TASK
from mpibench.cluster.mpi import recv_from, wait
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stopping import StopFlag


class WorkerStop:
    """A worker stops its task when it got a signal itself or rank 0 told it to (one Iprobe a check)."""

    def __init__(self, comm: MPI.Comm, local: StopFlag):
        self.comm, self.local = comm, local

    def __call__(self) -> str | None:
        """Why to stop (this rank's signal, or rank 0's request), or None."""
        return self.local() or ("rank 0's request" if self.comm.Iprobe(source=0, tag=TAG_STOP) else None)


def serve(comm: MPI.Comm, execute: Callable[[Task], Result]) -> int:
    """The worker loop; returns how many tasks this rank measured."""
    wait(comm.isend(None, dest=0, tag=TAG_RESULT))
    done = 0
    while True:
        task = recv_from(comm, 0, TAG_TASK)
        if task is None:
            break
        wait(comm.isend(execute(task), dest=0, tag=TAG_RESULT))  # sleeps, not spins, while rank 0 takes it
        done += 1
    while comm.Iprobe(source=0, tag=TAG_STOP):  # a stop that crossed our last result
        comm.recv(source=0, tag=TAG_STOP)
    return done
