"""Rank 0: hands out Tasks to workers that ask for them (longest first) and collects Results."""

from __future__ import annotations

from collections import deque
from typing import Callable

from mpi4py import MPI

from mpibench.mpiutil import Backoff, recv_any
from mpibench.plan import Task, dispatch_order
from mpibench.result import Result

TAG_RESULT = 11  # worker -> 0: a Result, or None when asking for the first task
TAG_TASK = 12  # 0 -> worker: a Task, or None: no more work


def coordinate(comm: MPI.Comm, tasks: list[Task], on_result: Callable[[Result], None],
               should_stop: Callable[[], bool] = lambda: False) -> list[Task]:
    """Dynamic dispatch to ranks 1..size-1 until every task is done; returns tasks never handed out.

    Workers pull: each message from a worker carries its last Result (or None) and asks for more.
    Rank 0 sleeps between polls, so a coordinator sharing a node does not steal a measuring core.
    """
    queue = deque(dispatch_order(tasks))
    active = set(range(1, comm.size))
    backoff = Backoff()
    while active:
        result, source = recv_any(comm, TAG_RESULT, backoff)
        if result is not None:
            on_result(result)
        if queue and not should_stop():
            comm.send(queue.popleft(), dest=source, tag=TAG_TASK)
        else:
            comm.send(None, dest=source, tag=TAG_TASK)
            active.discard(source)
    return list(queue)


def run_serial(tasks: list[Task], execute: Callable[[Task], Result],
               on_result: Callable[[Result], None],
               should_stop: Callable[[], bool] = lambda: False) -> list[Task]:
    """One rank: measure the tasks in plan order on this process."""
    queue = deque(tasks)
    while queue and not should_stop():
        on_result(execute(queue.popleft()))
    return list(queue)
