"""`python -m mpibench.run`: plan a sweep on rank 0, measure it on every other rank, gather one HDF5 file.

    python -m mpibench.run --config configs/quick.yaml                 # one rank, serial
    mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml       # rank 0 coordinates, 3 measure
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import yaml

from mpibench import __version__
from mpibench.cli import (Parser, add_config_flags, check_output, launcher_rank, launcher_size,
                          load_config)
from mpibench.config import Config
from mpibench.errors import UsageError
from mpibench.plan import estimate_total, expand
from mpibench.session import coordinate_run, scaling_run
from mpibench.stopping import StopFlag

EPILOG = """examples:
  python -m mpibench.run --config configs/quick.yaml --dry-run
  mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml --batch-sizes 1,2,4,8 --output results/cpu.h5
  python -m mpibench.run --model distilbert-tiny --precisions fp32,bf16 --min-time 1 --output tiny.h5

Flags override the YAML file; every flag is also a YAML field (shown as section options below).
Exit status: 0 done, 2 bad input (nothing written), 1 an unexpected error."""

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
        binding = bind(topo, cfg.cluster.isolation)
        hosts = gather_hosts(comm, topo, cfg.energy.backend, cfg.energy.idle_s)
        rank_info = comm.allgather((topo.node, topo.host))
        oversubscribed = comm.gather(binding.oversubscribed, root=0)
        if comm.rank == 0:
            if any(oversubscribed):
                print("warning: more measuring ranks than cores on a node: ranks share cores and "
                      "their figures disturb each other; use fewer ranks per node or "
                      "--isolation node", file=sys.stderr)
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
