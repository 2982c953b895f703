"""Rank 0's sink for Results: the HDF5 file, the optional JSON lines, progress, and what is final."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mpibench.console import Progress
from mpibench.plan import Task
from mpibench.result import Result
from mpibench.store import JsonlWriter, Store

FINAL = ("ok", "failed", "oom", "unavailable")  # a task with one of these is done; interrupted is not


class Recorder:
    """Writes every Result the moment it arrives (append + flush), so nothing measured is lost."""

    def __init__(self, store: Store, jsonl: Path | None = None, overwrite: bool = False):
        self.store = store
        self.jsonl = JsonlWriter(jsonl, overwrite=overwrite) if jsonl else None
        self.progress: Progress | None = None
        self.rows: list[dict] = []
        self.t0 = time.monotonic()

    def expect(self, tasks: list[Task]) -> None:
        """Count progress (done/total, ETA) against these tasks from now on."""
        self.progress = Progress(tasks)

    def __call__(self, result: Result) -> None:
        row = result.row()
        self.store.append(row, result.raw_ns, result.energy_trace)
        if self.jsonl:
            self.jsonl.write(row)
        self.rows.append(row)
        if self.progress is not None:
            self.progress.update(row, result.task)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def close(self, complete: bool, **attrs) -> None:
        self.store.set_attrs(**attrs)
        self.store.close(complete=complete)
        if self.jsonl:
            self.jsonl.close()


def final_ids(tasks: dict) -> set[int]:
    """Task ids (places in the plan of the file's own config) that already have a final row."""
    return {int(t) for t, status in zip(tasks["task_id"], tasks["status"]) if status in FINAL}


def open_for_resume(path: Path, hosts: list[dict], note: dict) -> tuple[Store, set[int]]:
    """Reopen a run file to append to it (rebuilding it first if its writer was killed)."""
    from mpibench.recover import recover

    try:
        store = Store.reopen(path)
    except OSError:  # a writer killed mid-run leaves the file marked open: rebuild it cleanly
        recover(path)
        store = Store.reopen(path)
    done = final_ids(store.read("tasks", "task_id", "status"))
    store.add_hosts(hosts)
    resumes = json.loads(store.f.attrs.get("resumes", "[]"))
    store.set_attrs(resumes=json.dumps(resumes + [note]))
    return store, done
