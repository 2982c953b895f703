"""What rank 0 prints: the plan, one progress line per finished task (done/total, ETA), the summary."""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections import defaultdict

import numpy as np
from rich.console import Console
from rich.table import Table

from mpibench.task import DEFAULTS, DIMENSIONS, Task, format_label

# Plain text at a fixed minimum width: output usually lands in job logs (mpirun, Slurm), not terminals.
console = Console(file=sys.stdout, highlight=False, color_system=None, soft_wrap=True,
                  width=max(120, shutil.get_terminal_size((120, 24)).columns))


def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def print_plan(tasks: list[Task], workers: int, total_s: float) -> None:
    for t in tasks:
        console.print(f"  task {t.task_id:>4}  {t.model}  {t.label()}  ~{t.est_cost_s:.1f} s")
    console.print(f"{len(tasks)} tasks on {workers} measuring rank(s); estimated total "
                  f"{fmt_duration(total_s)}")


class Progress:
    """done/total with an ETA from the estimated cost of what is done and what is left.

    One line per finished task, but at most one per `every_s` while tasks finish faster than that
    (thousands a second would flood the job log); failures and the last task always get theirs.
    """

    def __init__(self, tasks: list[Task], every_s: float = 0.5):
        self.total = len(tasks)
        self.remaining_cost = sum(t.est_cost_s for t in tasks)
        self.done_cost = 0.0
        self.done = 0
        self.t0 = time.monotonic()
        self.every_s, self.printed_at = every_s, -math.inf

    def update(self, row: dict, task: Task) -> None:
        self.done += 1
        self.done_cost += task.est_cost_s
        self.remaining_cost -= task.est_cost_s
        now = time.monotonic()
        if row["status"] == "ok" and self.done < self.total and now - self.printed_at < self.every_s:
            return
        self.printed_at = now
        elapsed = now - self.t0
        eta = elapsed * self.remaining_cost / self.done_cost if self.done_cost > 0 else math.nan
        if row["status"] == "ok":
            what = (f"{row['throughput_sps']:8.1f} samples/s  p50 {row['e2e_p50_ms']:.2f} ms"
                    + ("" if row.get("converged") else "  (not converged)"))
        else:
            what = f"{row['status'].upper()}: {row['message']}"
        width = len(str(self.total))
        console.print(f"[{self.done:>{width}}/{self.total}] {task.label(row['threads']):<40} rank {row['rank']:<3} "
                      f"{what} | {fmt_duration(elapsed)} ETA {fmt_duration(eta)}")


#: The summary's columns name these dimensions; the rest of a configuration reads as its "variant".
_SHOWN = ("model", "device", "precision", "batch_size", "seq_len", "threads")


def _variant(r: dict) -> str:
    """`server rate=20/s`, `offline compile attn=eager`: the dimensions the columns do not show."""
    rest = format_label(r, omit=(*_SHOWN, "scenario"))
    return " ".join(filter(None, (r.get("scenario", DEFAULTS["scenario"]), rest)))


def print_summary(rows: list[dict], path: str, elapsed_s: float) -> None:
    """Per configuration but the batch size: the best batch size by throughput, beside the smallest.
    A configuration measured in several windows (--repeats) is stated by their combined figures."""
    by = defaultdict(list)
    status_count: dict[str, int] = defaultdict(int)
    for r in rows:
        status_count[r["status"]] += 1
    usable = [r for r in rows if r["status"] == "ok" and r.get("stage", "") in ("", "final")]  # no search rows
    for r in _per_configuration(usable):
        by[tuple(r[d] for d in DIMENSIONS if d != "batch_size")].append(r)
    table = Table(title="Best batch size by throughput (end to end)")
    for col in ("device", "precision", "seq", "threads", "scenario", "best batch", "samples/s",
                "95% CI", "p99 ms", "vs smallest batch"):
        table.add_column(col, justify="right" if col not in ("device", "precision", "scenario") else "left")
    for _, rs in sorted(by.items()):
        best = max(rs, key=lambda r: r["throughput_sps"])
        smallest = min(rs, key=lambda r: r["batch_size"])
        gain = best["throughput_sps"] / smallest["throughput_sps"]
        table.add_row(best["device"], best["precision"], str(best["seq_len"]), str(best["threads"]),
                      _variant(best), str(best["batch_size"]),
                      f"{best['throughput_sps']:.1f}",
                      f"{best['throughput_ci_low_sps']:.1f}-{best['throughput_ci_high_sps']:.1f}",
                      f"{best['latency_p99_ms']:.2f}",
                      f"x{gain:.2f} (bs {smallest['batch_size']})")
    console.print(table)
    for line in _contrast_lines(usable):
        console.print(line)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_count.items()))
    console.print(f"{len(rows)} tasks ({counts}) in {fmt_duration(elapsed_s)}; results: {path}")


def _table(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows]) for k in set.intersection(*(set(r) for r in rows))} if rows else {}


def _per_configuration(rows: list[dict]) -> list[dict]:
    """One row per configuration, its windows' figures combined (mpibench.analysis.table.per_configuration)."""
    from mpibench.analysis.table import per_configuration

    if not rows:
        return []
    t, idx = per_configuration(_table(rows))
    return [{k: v[i].item() if isinstance(v[i], np.generic) else v[i] for k, v in t.items()} for i in idx]


def _contrast_lines(rows: list[dict]) -> list[str]:
    """`bf16 vs fp32 on cpu: 0.55×–0.60× throughput over batch sizes 1–8 (...)`, as the report says it:
    "CIs apart" only where every window (--repeats) says so too."""
    from mpibench.analysis.contrasts import contrasts, summaries
    from mpibench.analysis.table import per_configuration

    if not rows:
        return []
    t = _table(rows)
    combined, per_config = per_configuration(t)
    return summaries(contrasts(combined, per_config, t))


def print_scaling(rows: list[dict]) -> None:
    table = Table(title="Scaling (fixed windows, started together)")
    for col in ("task", "by", "ranks", "nodes", "aggregate samples/s", "per rank", "efficiency"):
        table.add_column(col, justify="left" if col in ("task", "by") else "right")
    for r in rows:
        table.add_row(format_label(r, omit=("threads", "model")), r["by"],
                      str(r["n_ranks"]), str(r["n_nodes"]), f"{r['aggregate_throughput_sps']:.1f}",
                      f"{r['per_rank_throughput_sps']:.1f}", f"{r['efficiency']:.2f}")
    console.print(table)
