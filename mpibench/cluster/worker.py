"""Every rank but 0: ask rank 0 for a Task, measure it, send the Result back, until told to stop."""

from __future__ import annotations

from typing import Callable

from mpi4py import MPI

from mpibench.cluster.coordinator import TAG_RESULT, TAG_STOP, TAG_TASK
from mpibench.cluster.mpi import recv_from
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.stopping import StopFlag


class WorkerStop:
    """A worker stops its task when it got a signal itself or rank 0 told it to (one Iprobe a check)."""

    def __init__(self, comm: MPI.Comm, local: StopFlag):
        self.comm, self.local = comm, local

    def __call__(self) -> bool:
        return self.local() or self.comm.Iprobe(source=0, tag=TAG_STOP)


def serve(comm: MPI.Comm, execute: Callable[[Task], Result]) -> int:
    """The worker loop; returns how many tasks this rank measured."""
    comm.send(None, dest=0, tag=TAG_RESULT)
    done = 0
    while True:
        task = recv_from(comm, 0, TAG_TASK)
        if task is None:
            break
        comm.send(execute(task), dest=0, tag=TAG_RESULT)
        done += 1
    while comm.Iprobe(source=0, tag=TAG_STOP):  # a stop that crossed our last result
        comm.recv(source=0, tag=TAG_STOP)
    return done
