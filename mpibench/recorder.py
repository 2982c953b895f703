"""Rank 0's sink for Results: the HDF5 file, the optional JSON lines, progress, and what is final."""

from __future__ import annotations

import time
from pathlib import Path

from mpibench.console import Progress
from mpibench.peak import mfu_measured
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.store import JsonlWriter, Store

FINAL = ("ok", "failed", "oom", "unavailable")  # a task with one of these is done; interrupted is not
#: A coordinator makes results durable within this many seconds of their arrival (group commit).
COMMIT_WINDOW_S = 0.5


class Recorder:
    """Takes every Result as it arrives and makes it durable within `window_s` (group commit).

    Results are committed together once the oldest uncommitted one is `window_s` old (or many are
    waiting): rank 0 then pays one write per column for many results. With `window_s` 0 every result is
    committed on arrival. The caller ticks (`tick()`) while it waits, so the window holds when no
    result arrives. Rank 0 knows every node's measured GEMM peaks (`gemm`): each row's `mfu_measured`
    is filled here.
    """

    def __init__(self, store: Store, jsonl: Path | None = None, overwrite: bool = False, window_s: float = 0.0,
                 gemm: dict[str, dict] | None = None):
        self.store, self.window_s = store, window_s
        self.gemm = gemm or {}  # host -> the GEMM peaks its leader measured (mpibench.peak.gemm_by_host)
        self.jsonl = JsonlWriter(jsonl, overwrite=overwrite) if jsonl else None
        self.progress: Progress | None = None
        self.rows: list[dict] = []
        self.t0 = time.monotonic()
        self._oldest: float | None = None  # arrival of the oldest uncommitted result

    def expect(self, tasks: list[Task]) -> None:
        """Count progress (done/total, ETA) against these tasks from now on."""
        self.progress = Progress(tasks)

    def __call__(self, result: Result) -> None:
        row = result.row()
        row["mfu_measured"] = mfu_measured(row, self.gemm)  # rank 0 holds every node's peaks
        self.store.append(row, result.raw_ns, result.energy_trace)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if self.jsonl:
            self.jsonl.write(row)
        self.rows.append(row)
        if self.progress is not None:
            self.progress.update(row, result.task)
        if self.store.full:
            self.commit()
        else:
            self.tick()

    def tick(self) -> None:
        """Commit if the oldest waiting result has waited `window_s`."""
        if self._oldest is not None and time.monotonic() - self._oldest >= self.window_s:
            self.commit()

    def commit(self) -> None:
        self._oldest = None
        self.store.commit()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def close(self, complete: bool, **state) -> None:
        """Commit, record how the run ended (`stopped_by`), close; the JSON lines close whatever happens."""
        try:
            if not self.store.broken:
                self.commit()
                self.store.set_state(**state)
            self.store.close(complete=complete)
        finally:
            if self.jsonl:
                self.jsonl.close()


def final_ids(tasks: dict) -> set[int]:
    """Task ids (places in the plan of the file's own config) that already have a final row."""
    return {int(t) for t, status in zip(tasks["task_id"], tasks["status"]) if status in FINAL}


def open_for_resume(path: Path, hosts: list[dict], note: dict) -> tuple[Store, set[int]]:
    """Reopen a run file to append to it (rebuilding it first if its writer was killed)."""
    from mpibench.recover import recover

    try:
        store = Store.reopen(path, resume=note)
    except OSError:  # a writer killed mid-run leaves the file marked open: rebuild it cleanly
        recover(path)
        store = Store.reopen(path, resume=note)
    done = final_ids(store.read("tasks", "task_id", "status"))
    store.add_hosts(hosts)
    return store, done
