"""Every rank but 0: ask rank 0 for a Task, measure it, send the Result back, until told to stop."""

from __future__ import annotations

from typing import Callable

from mpi4py import MPI

from mpibench.coordinator import TAG_RESULT, TAG_TASK
from mpibench.mpiutil import recv_from
from mpibench.plan import Task
from mpibench.result import Result


def serve(comm: MPI.Comm, execute: Callable[[Task], Result]) -> int:
    """The worker loop; returns how many tasks this rank measured."""
    comm.send(None, dest=0, tag=TAG_RESULT)
    done = 0
    while True:
        task = recv_from(comm, 0, TAG_TASK)
        if task is None:
            return done
        comm.send(execute(task), dest=0, tag=TAG_RESULT)
        done += 1
