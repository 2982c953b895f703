"""Rank 0: hands out Tasks to workers that ask for them (in plan.dispatch_order) and collects Results.

Rank 0 never blocks on one worker: every send and receive is non-blocking (a matched probe, then a
receive tested between polls), so a worker that freezes, even halfway through sending its result, costs
only its own task.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict, deque
from typing import Callable

from mpi4py import MPI

from mpibench.cluster.mpi import Backoff
from mpibench.plan import Task, dispatch_order
from mpibench.result import Result
from mpibench.stopping import StopFlag

TAG_RESULT = 11  # worker -> 0: a Result, or None when asking for the first task
TAG_TASK = 12  # 0 -> worker: a Task, or None: no more work
TAG_STOP = 13  # 0 -> worker: abandon the task in hand (a stop was requested)
#: How far down the queue a rank looks for a configuration it has not measured yet.
LOOKAHEAD = 64


class Coordinator:
    """Dynamic dispatch to ranks 1..size-1: workers pull, rank 0 sleeps between polls.

    A worker silent on its task for longer than `timeout(task)` seconds has the task recorded `failed`
    and is *lost*: it gets no more work, and the caller ends the job (MPI_Abort) once the rest is done.
    On a stop request rank 0 hands out nothing more, tells busy workers to abandon their task, waits up
    to `grace_s` for them (not at all for SIGTERM), and records what is still in flight as `interrupted`.
    A worker that reports its task interrupted by a signal of its own stops the run the same way.
    `run()` returns the tasks that were never started.
    """

    def __init__(self, comm: MPI.Comm, on_result: Callable[[Result], None], stop: StopFlag,
                 grace_s: float = 30.0, can_start: Callable[[int, dict], bool] = lambda rank, busy: True,
                 hosts: dict[int, str] | None = None, while_waiting: Callable[[], None] = lambda: None,
                 timeout: Callable[[Task], float] = lambda task: math.inf):
        self.comm, self.on_result, self.stop, self.grace_s = comm, on_result, stop, grace_s
        self.while_waiting = while_waiting  # called between polls (the recorder's group commit)
        self.can_start = can_start  # isolation policy: may `rank` start a task while `busy` run?
        self.timeout = timeout  # seconds a task may take before its worker counts as lost
        self.busy: dict[int, Task] = {}
        self.deadline: dict[int, float] = {}  # busy rank -> when it counts as lost
        self.idle: list[int] = []  # workers waiting for an answer
        self.released: set[int] = set()  # workers told there is no more work
        self.lost: dict[int, str] = {}  # workers that stopped answering -> why
        self.hosts = hosts or {}  # rank -> host, for the rows of tasks it had to abandon
        self._receiving: dict[int, MPI.Request] = {}  # a result on its way from this rank
        self._sending: list[MPI.Request] = []
        self.measured: dict[int, set[tuple]] = defaultdict(set)  # rank -> configurations it was given

    def run(self, tasks: list[Task], release: bool = True) -> list[Task]:
        """Measure `tasks`; with release=False the workers are kept for another call (rounds)."""
        queue = deque(dispatch_order(tasks))
        workers = set(range(1, self.comm.size))
        backoff = Backoff()
        stopping_at: float | None = None

        def grace_over() -> bool:
            return stopping_at is not None and (
                self.stop.urgent or time.monotonic() - stopping_at > self.grace_s)

        while True:
            if self.stop() and stopping_at is None:
                stopping_at = time.monotonic()
                for rank in self.busy:
                    self._send(None, rank, TAG_STOP)
            if self.busy and grace_over():
                break
            self._give_up_on_silent()
            letting_go = release or stopping_at is not None
            for rank in list(self.idle):
                if queue and stopping_at is None:
                    if self.can_start(rank, self.busy):
                        self.idle.remove(rank)
                        self.busy[rank] = self._next_for(rank, queue)
                        self.deadline[rank] = time.monotonic() + self.timeout(self.busy[rank])
                        self._send(self.busy[rank], rank, TAG_TASK)
                elif letting_go:  # nothing more for this worker
                    self.idle.remove(rank)
                    self.released.add(rank)
                    self._send(None, rank, TAG_TASK)
            if not self.busy and (not queue or stopping_at is not None) and (
                    not letting_go or self.released | set(self.lost) >= workers):
                break
            if self._receive():
                backoff.reset()
            else:
                self.while_waiting()
                backoff.sleep()
        for rank, task in self.busy.items():  # still running when the grace period ran out
            self.on_result(Result.failure(task, "interrupted", rank, self.hosts.get(rank, "?"),
                                          f"stopped by {self.stop.signal} before the task finished"))
        return list(queue)

    def _next_for(self, rank: int, queue: deque) -> Task:
        """The first queued task of a configuration `rank` has not measured yet, looking LOOKAHEAD tasks
        ahead, else the first: --repeats spreads a configuration's windows over the ranks."""
        seen = self.measured[rank]
        pick = next((i for i, task in enumerate(itertools.islice(queue, LOOKAHEAD)) if task.key not in seen), 0)
        task = queue[pick]
        del queue[pick]
        seen.add(task.key)
        return task

    def _send(self, obj, rank: int, tag: int) -> None:
        self._sending = [r for r in self._sending if not r.Test()]  # keep the unfinished ones alive
        self._sending.append(self.comm.isend(obj, dest=rank, tag=tag))

    def _receive(self) -> bool:
        """Start receiving what has arrived, and take every result received completely; True if any."""
        status = MPI.Status()
        while (message := self.comm.improbe(MPI.ANY_SOURCE, TAG_RESULT, status)) is not None:
            self._receiving[status.Get_source()] = message.irecv()
        took = False
        for source, request in list(self._receiving.items()):
            done, result = request.test()
            if done:
                del self._receiving[source]
                self._take(source, result)
                took = True
        return took

    def _take(self, source: int, result: Result | None) -> None:
        if source in self.lost:
            return  # its task is already recorded failed; it gets nothing more
        self.busy.pop(source, None)
        self.deadline.pop(source, None)
        if result is not None:
            if result.status == "interrupted" and not self.stop():  # a signal reached that worker only
                self.stop.request(f"{result.message.split('stopped by ')[-1]} on rank {source}")
            self.on_result(result)
        self.idle.append(source)

    def _give_up_on_silent(self) -> None:
        now = time.monotonic()
        for rank in [r for r, t in self.deadline.items() if t <= now]:
            task = self.busy.pop(rank)
            limit = self.timeout(task)
            del self.deadline[rank]
            self._receiving.pop(rank, None)  # a transfer the rank froze in: abandoned
            failure = Result.failure(task, "failed", rank, self.hosts.get(rank, "?"), f"no answer for {limit:.0f} s")
            self.lost[rank] = failure.message
            self.on_result(failure)


def run_serial(tasks: list[Task], execute: Callable[[Task], Result],
               on_result: Callable[[Result], None], stop: Callable[[], bool]) -> list[Task]:
    """One rank: measure the tasks in plan order on this process."""
    queue = deque(tasks)
    while queue and not stop():
        on_result(execute(queue.popleft()))
    return list(queue)
