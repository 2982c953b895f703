"""`--optimal`: measure only the best configuration(s), longer.

- From a results file: the optimum per device for the objective (mpibench.analysis.choose_optimal:
  converged rows only, ties resolved to the cheaper configuration), re-measured FINAL_SCALE times
  longer than configured.
- Without a file: a quick search first. Every configuration of the sweep is measured briefly; the
  better half per device goes on to a measurement twice as long, and so on (successive halving)
  until one is left per device; that one gets the long final measurement. Every stage's rows are
  kept in the file (`stage` = search-1, search-2, ..., final) so the choice can be checked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from mpibench.errors import UsageError
from mpibench.task import DIMENSIONS, Task

FINAL_SCALE = 3.0
FIRST_SCALE = 0.25


def score(row: dict, objective: str, slo_ms: float | None) -> float:
    """Higher is better; -inf for rows that cannot be chosen."""
    if row["status"] != "ok":
        return -math.inf
    if objective == "throughput":
        return row["throughput_sps"]
    if objective == "latency":
        p99 = row["latency_p99_ms"]
        if slo_ms is not None:  # meet the bound, then the most throughput
            return row["throughput_sps"] if p99 <= slo_ms else -math.inf
        return -p99
    if objective == "tokens":  # generation only; with an SLO, its time per output token must meet it
        tokens, tpot = row.get("output_tokens_per_s", math.nan), row.get("tpot_mean_ms", math.nan)
        if row.get("workload") != "generate" or not np.isfinite(tokens) or (slo_ms is not None and not tpot <= slo_ms):
            return -math.inf
        return tokens
    j = row.get("j_per_sample", math.nan)
    return -j if np.isfinite(j) else -math.inf


def successive_halving(tasks: list[Task], run_round: Callable[[list[Task]], list[dict]],
                       objective: str, slo_ms: float | None) -> tuple[list[Task], list[str]]:
    """Short measurements of all, then ever longer ones of the better half, per device."""
    devices = list(dict.fromkeys(t.device for t in tasks))  # in plan order
    alive = tasks
    scale, stage, log = FIRST_SCALE, 1, []
    while any(len([t for t in alive if t.device == d]) > 1 for d in devices):
        staged = [dataclasses.replace(t, stage=f"search-{stage}", time_scale=scale) for t in alive]
        rows = {r["task_id"]: r for r in run_round(staged)}
        keep = []
        for device in devices:
            mine = sorted((t for t in alive if t.device == device),
                          key=lambda t: score(rows[t.task_id], objective, slo_ms) if t.task_id in rows else -math.inf,
                          reverse=True)
            n_keep = max(1, math.ceil(len(mine) / 2))
            keep += mine[:n_keep]
            log.append(f"search-{stage} ({scale:g}x time) on {device}: kept {n_keep} of {len(mine)}: "
                       + ", ".join(t.label() for t in mine[:n_keep]))
        alive = [t for t in tasks if t in keep]
        scale, stage = scale * 2, stage + 1
    return [dataclasses.replace(t, stage="final", time_scale=FINAL_SCALE) for t in alive], log


def from_file(path, planned: list[Task], objective: str, slo_ms: float | None) -> tuple[list[Task], list[str]]:
    """The chosen configuration(s) of an earlier run, as tasks of this run's plan."""
    from mpibench.analysis.optimum import choose_optimal
    from mpibench.store import read_tasks

    bound = {"tpot_slo_ms": slo_ms} if objective == "tokens" else {"latency_slo_ms": slo_ms}
    chosen = choose_optimal(read_tasks(path), objective, **bound)
    picked, log = [], []
    for c in chosen:
        if c.get("batch_size") is None:
            log.append(f"{c.get('device')}: nothing to choose: {c.get('reason')}")
            continue
        match = [t for t in planned if _describes(c, t)]
        if match:
            picked.append(dataclasses.replace(match[0], stage="final", time_scale=FINAL_SCALE))
            log.append(f"{c['device']}: {match[0].label()} ({c.get('reason', '')})")
    if not picked:
        raise UsageError(f"--optimal {path}: no configuration can be chosen for objective {objective!r}: "
                         + "; ".join(log))
    return picked, log


def _describes(chosen: dict, task: Task) -> bool:
    """The chosen configuration is this task's: every dimension the file has matches, threads 0
    ("auto" in the plan) any count."""
    return all(chosen.get(d) in (None, "") or chosen[d] == getattr(task, d)
               or (d == "threads" and not task.threads) for d in DIMENSIONS)
