"""Rank 0: hands out Tasks to workers that ask for them (longest first) and collects Results."""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from mpi4py import MPI

from mpibench.cluster.mpi import Backoff, poll_any
from mpibench.plan import Task, dispatch_order
from mpibench.result import Result
from mpibench.stopping import StopFlag

TAG_RESULT = 11  # worker -> 0: a Result, or None when asking for the first task
TAG_TASK = 12  # 0 -> worker: a Task, or None: no more work
TAG_STOP = 13  # 0 -> worker: abandon the task in hand (a stop was requested)


class Coordinator:
    """Dynamic dispatch to ranks 1..size-1: workers pull, rank 0 sleeps between polls.

    On a stop request it hands out nothing more, tells busy workers to abandon their task, waits
    up to `grace_s` for them (not at all for SIGTERM), and records what is still in flight as
    `interrupted`. `run()` returns the tasks that were never started.
    """

    def __init__(self, comm: MPI.Comm, on_result: Callable[[Result], None], stop: StopFlag,
                 grace_s: float = 30.0, can_start: Callable[[int, dict], bool] = lambda rank, busy: True,
                 hosts: dict[int, str] | None = None, while_waiting: Callable[[], None] = lambda: None):
        self.comm, self.on_result, self.stop, self.grace_s = comm, on_result, stop, grace_s
        self.while_waiting = while_waiting  # called between polls (the recorder's group commit)
        self.can_start = can_start  # isolation policy: may `rank` start a task while `busy` run?
        self.busy: dict[int, Task] = {}
        self.idle: list[int] = []  # workers waiting for an answer
        self.released: set[int] = set()  # workers told there is no more work
        self.hosts = hosts or {}  # rank -> host, for the rows of tasks it had to abandon

    def run(self, tasks: list[Task], release: bool = True) -> list[Task]:
        """Measure `tasks`; with release=False the workers are kept for another call (rounds)."""
        queue = deque(dispatch_order(tasks))
        workers = set(range(1, self.comm.size))
        backoff = Backoff()
        stopping_at: float | None = None

        def deadline_passed() -> bool:
            return stopping_at is not None and (
                self.stop.urgent or time.monotonic() - stopping_at > self.grace_s)

        while True:
            if self.stop() and stopping_at is None:
                stopping_at = time.monotonic()
                for rank in self.busy:
                    self.comm.send(None, dest=rank, tag=TAG_STOP)
            if self.busy and deadline_passed():
                break
            letting_go = release or stopping_at is not None
            for rank in list(self.idle):
                if queue and stopping_at is None:
                    if self.can_start(rank, self.busy):
                        self.idle.remove(rank)
                        self.busy[rank] = queue.popleft()
                        self.comm.send(self.busy[rank], dest=rank, tag=TAG_TASK)
                elif letting_go:  # nothing more for this worker
                    self.idle.remove(rank)
                    self.released.add(rank)
                    self.comm.send(None, dest=rank, tag=TAG_TASK)
            if not self.busy and (not queue or stopping_at is not None) and (
                    not letting_go or self.released == workers):
                break
            got = poll_any(self.comm, TAG_RESULT, backoff,
                           until=lambda: self.while_waiting() or (self.stop() and stopping_at is None)
                           or deadline_passed())
            if got is not None:
                result, source = got
                self.busy.pop(source, None)
                if result is not None:
                    self.on_result(result)
                self.idle.append(source)
        for rank, task in self.busy.items():  # still running when the grace period ran out
            self.on_result(Result.failure(task, "interrupted", rank, self.hosts.get(rank, "?"),
                                          f"stopped by {self.stop.signal} before the task finished"))
        return list(queue)


def run_serial(tasks: list[Task], execute: Callable[[Task], Result],
               on_result: Callable[[Result], None], stop: Callable[[], bool]) -> list[Task]:
    """One rank: measure the tasks in plan order on this process."""
    queue = deque(tasks)
    while queue and not stop():
        on_result(execute(queue.popleft()))
    return list(queue)
