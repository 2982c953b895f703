"""One run on every rank: rank 0's verdict on the input, where each rank runs, then the rank's part."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from mpi4py import MPI

from mpibench.claim import WriterClaim
from mpibench.cluster.layout import Layout
from mpibench.cluster.mpi import quiet_barrier
from mpibench.cluster.scaling import run_scaling
from mpibench.cluster.session import Options, lead_scaling, lead_sweep
from mpibench.cluster.topology import bind, discover, gather_hosts, measures
from mpibench.cluster.worker import WorkerStop, serve
from mpibench.config import Config
from mpibench.errors import StoreError, UsageError
from mpibench.gemm import GemmPlan
from mpibench.placement import Placement
from mpibench.plan import expand, first_windows
from mpibench.stopping import StopFlag

OVERSUBSCRIBED = ("warning: more measuring ranks than cores on a node: ranks share cores and their "
                  "figures disturb each other; use fewer ranks per node or --isolation node")


def launch(resolve: Callable[[], tuple[Config, WriterClaim]], options: Options) -> int:
    """Run on every rank of the world; `resolve` (rank 0 only) gives the config and the claim on its
    output, or a UsageError."""
    comm = MPI.COMM_WORLD
    stop = StopFlag().install()
    claim = None
    try:
        cfg, claim = validated(comm, resolve)
        return _run(comm, cfg, options, stop)
    except (UsageError, SystemExit):
        raise  # every rank has the same error: the entry point reports it once
    except StoreError as err:  # rank 0 cannot write the file: say so once, end every rank
        print(f"error: {err}", file=sys.stderr, flush=True)
        if claim is not None:
            claim.release()
        sys.stdout.flush()
        if comm.size > 1:
            comm.Abort(err.exit_code)
        os._exit(err.exit_code)  # HDF5 failed mid-write: closing its file at exit could crash
    except BaseException:
        if comm.size > 1:  # one rank's crash must end the job, not hang it
            sys.stderr.write(f"rank {comm.rank}: unexpected error\n{traceback.format_exc()}")
            sys.stderr.flush()
            comm.Abort(1)
        raise
    finally:
        if claim is not None:
            claim.release()  # the file is closed by now: another run may write it


def validated(comm: MPI.Comm, resolve: Callable[[], tuple[Config, WriterClaim]]
              ) -> tuple[Config, WriterClaim | None]:
    """Rank 0 validates the input and claims the output; every rank learns the verdict, so none is left
    waiting. The claim stays with rank 0 (None elsewhere)."""
    verdict: Config | UsageError | None = None
    claim = None
    if comm.rank == 0:
        try:
            verdict, claim = resolve()
        except UsageError as err:
            verdict = err
    verdict = comm.bcast(verdict, root=0)
    if isinstance(verdict, UsageError):
        raise verdict  # on every rank: they report it together
    return verdict, claim


def _run(comm: MPI.Comm, cfg: Config, options: Options, stop: StopFlag) -> int:
    """Find the layout, make this rank's executor, check energy everywhere, then play the rank's part."""
    topo = discover(comm)
    binding = bind(topo, cfg.cluster.isolation)
    host_rows = gather_hosts(comm, topo, cfg.energy.backend, cfg.energy.idle_s, stop, gemm_plan(cfg))
    gpus = visible_gpus(cfg) if measures(comm.rank, comm.size) else 0
    layout = Layout.gather(comm, topo, binding, cfg.cluster.isolation, gpus)
    if comm.rank == 0 and layout.oversubscribed:
        print(OVERSUBSCRIBED, file=sys.stderr)
    executor = None
    if layout.measures(comm.rank):
        should_stop = stop if comm.size == 1 else WorkerStop(comm, stop)
        executor = make_executor(cfg, layout.placement(topo, binding), should_stop)
    check_energy(comm, executor)
    quiet_barrier(comm)  # every worker is ready: they start pulling together
    code = _part(comm, cfg, options, layout, host_rows, stop, executor)
    if executor:
        executor.close()
    quiet_barrier(comm)
    return code


def _part(comm: MPI.Comm, cfg: Config, options: Options, layout: Layout, host_rows, stop: StopFlag,
          executor) -> int:
    """This rank's part: the one place that tells rank 0 from the others, and a sweep from scaling."""
    scaling = cfg.cluster.mode == "scaling"
    if comm.rank == 0 and scaling:
        return lead_scaling(cfg, comm, layout, host_rows, stop, executor)
    if comm.rank == 0:
        return lead_sweep(cfg, comm, layout, host_rows, stop, options, executor)
    if scaling:
        run_scaling(comm, cfg, first_windows(expand(cfg)), executor, layout.workers, stop=stop)
    else:
        serve(comm, executor.run)
    return 0


def visible_gpus(cfg: Config) -> int:
    """GPUs a measuring rank sees; torch is imported on measuring ranks only, once the input passed."""
    if cfg.model.name == "synthetic":
        return 0
    import torch

    return torch.cuda.device_count()


def gemm_plan(cfg: Config) -> GemmPlan | None:
    """The GEMM peaks node leaders measure at start: the sweep's devices and precisions; none for the
    synthetic model (it has no FLOPs, and its runs stay free of torch)."""
    if cfg.model.name == "synthetic":
        return None
    return GemmPlan(tuple(cfg.sweep.devices), tuple(cfg.sweep.precisions))


def make_executor(cfg: Config, placement: Placement, should_stop: Callable[[], bool]):
    """The measuring side of a rank: the synthetic model needs no torch."""
    if cfg.model.name == "synthetic":
        from mpibench.synthetic import SyntheticExecutor

        return SyntheticExecutor(cfg, placement, should_stop)
    from mpibench.inference.execute import Executor

    return Executor(cfg, placement, should_stop)


def check_energy(comm: MPI.Comm, executor) -> None:
    """A backend named with --energy that cannot read on some rank stops the run before it starts."""
    problems = [p for p in comm.allgather(executor.check_energy() if executor else None) if p]
    if problems:
        raise UsageError(problems[0])


def report_together(err: UsageError) -> None:
    """Bad input under a launcher: rank 0 says it once, and no rank exits before it is said."""
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        print(f"error: {err}", file=sys.stderr, flush=True)
    quiet_barrier(comm)  # the launcher kills the job at the first exit
