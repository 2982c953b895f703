"""`python -m mpibench.run`: plan a sweep on rank 0, measure it on every other rank, gather one HDF5 file.

    python -m mpibench.run --config configs/quick.yaml                 # one rank, serial
    mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml       # rank 0 coordinates, 3 measure
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpibench import __version__
from mpibench.analysis.optimum import OBJECTIVES
from mpibench.cli import (Parser, add_config_flags, claim_output, config_flags, launcher_rank, launcher_size,
                          load_config, overrides)
from mpibench.config import Config, build, merge
from mpibench.errors import UsageError
from mpibench.plan import estimate_total, expand

EPILOG = """examples:
  python -m mpibench.run --config configs/quick.yaml --dry-run
  mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml --batch-sizes 1,2,4,8 --output results/cpu.h5
  python -m mpibench.run --model distilbert-tiny --precisions fp32,bf16 --min-time 1 --output tiny.h5

Flags override the YAML file; every flag is also a YAML field (shown as section options below).
Exit status: 0 done, 2 bad input (nothing written), 3 stopped by a signal (finish with --resume),
4 the results file could not be written (disk full; finish with --resume), 5 a rank stopped answering
(its task recorded failed, the rest measured, the job ended with MPI_Abort), 1 an unexpected error."""


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
    p.add_argument("--objective", choices=OBJECTIVES, default="throughput",
                   help="what --optimal optimises (latency: p99 under --latency-slo-ms, then "
                        "throughput; energy: J/sample; tokens: generation's output tokens/s, with "
                        "--tpot-slo-ms under that bound) (default: throughput)")
    p.add_argument("--version", action="version", version=f"mpibench {__version__}")
    add_config_flags(p)
    return p


def _dry_run(ns) -> int:
    """The plan, or with --resume the file's tasks still without a final row."""
    from mpibench.console import print_plan

    if launcher_rank() != 0:
        return 0  # under a launcher, rank 0 prints the plan
    workers = max(1, launcher_size() - 1)
    if ns.resume is not None:
        from mpibench.plan import pending
        from mpibench.recorder import final_ids
        from mpibench.store import read_tasks

        tasks = pending(expand(_resume_config(ns)), final_ids(read_tasks(ns.resume)))
        print(f"{ns.resume}: {len(tasks)} task(s) left to measure")
    else:
        tasks = expand(load_config(ns.config, ns))
    print_plan(tasks, workers, estimate_total(tasks, workers))
    return 0


def _resolve(ns):
    """This run's config (from files and flags, or stored in the file for --optimal and --resume) and
    the writer's claim on its output, taken once every check has passed."""
    if ns.optimal:
        cfg = _optimal_config(ns)
    elif ns.resume is not None:
        cfg = _resume_config(ns)
    else:
        cfg = load_config(ns.config, ns)
    out = cfg.output
    claim = claim_output(out.path, overwrite=out.overwrite, resume=ns.resume is not None,
                         need_bytes=_need_bytes(cfg, ns.resume), jsonl=out.jsonl)
    return cfg, claim


def _need_bytes(cfg: Config, resume: Path | None) -> int:
    """What the run is expected to add to its file: rows and raw samples of the tasks still to measure."""
    from mpibench.plan import estimate_samples
    from mpibench.store import ROW_BYTES, read_tasks

    tasks = expand(cfg)
    if resume is not None and resume.is_file():
        from mpibench.recorder import final_ids

        done = final_ids(read_tasks(resume))
        tasks = [t for t in tasks if t.task_id not in done]
    return sum(ROW_BYTES + 8 * 4 * estimate_samples(cfg, t) for t in tasks) + (1 << 20)


def _optimal_config(ns) -> Config:
    """--optimal RUN.h5: the file's own sweep, with flags on top; a new output file beside it."""
    from mpibench.store import read_config, read_tasks

    stored = read_config(ns.optimal)
    read_tasks(ns.optimal)  # a damaged source is refused before the new file is created
    stored["output"] = {"path": str(Path(ns.optimal).with_name(Path(ns.optimal).stem + "-optimal.h5")),
                        "overwrite": False, "jsonl": None}
    return build(merge(stored, overrides(ns)), source=f"--optimal {ns.optimal}")


#: What --resume takes beside the file: how to run and where else to write, never what to measure.
RESUME_FLAGS = {("output", "jsonl"), ("cluster", "stop_grace_s"), ("cluster", "task_timeout_s")}


def _resume_config(ns) -> Config:
    """--resume RUN.h5: the stored config, appending to the same file; flags that would change the sweep
    or the output are refused."""
    from mpibench.store import read_attrs, read_config

    if ns.config is not None:
        raise UsageError(f"--resume takes its config from {str(ns.resume)!r}; drop --config {ns.config}")
    extra = [f.flag for f in config_flags() if getattr(ns, f.dest) is not None and f.path not in RESUME_FLAGS]
    if extra:
        allowed = ", ".join(f.flag for f in config_flags() if f.path in RESUME_FLAGS)
        raise UsageError(f"--resume completes the sweep stored in {str(ns.resume)!r} as it was: {', '.join(extra)} "
                         f"would change it; allowed with --resume: {allowed}; to measure something else, "
                         "start a new run with --output")
    if not ns.resume.is_file():
        raise UsageError(f"--resume: {str(ns.resume)!r} does not exist")
    from mpibench import SCHEMA_VERSION

    stored, attrs = read_config(ns.resume), read_attrs(ns.resume)
    if attrs.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
        raise UsageError(f"--resume: {str(ns.resume)!r} has schema version {attrs['schema_version']}, from an older "
                         f"mpibench (this one writes {SCHEMA_VERSION}); finish it with that version, or start a new run")
    if "optimal_objective" in attrs:
        raise UsageError(f"--resume: {str(ns.resume)!r} is an --optimal run; run --optimal again")
    if stored.get("cluster", {}).get("mode") == "scaling":
        raise UsageError(f"--resume: {str(ns.resume)!r} is a scaling run; its windows must be "
                         "measured together, so start a new one")
    stored.setdefault("output", {}).update(path=str(ns.resume), overwrite=False, jsonl=ns.cfg__output__jsonl)
    return build(merge(stored, overrides(ns)), source=f"--resume {ns.resume}")


def _main(argv: list[str] | None = None) -> int:
    """Parse, then either print the plan or hand the run to the cluster layer (which validates on rank 0)."""
    ns = build_parser().parse_args(argv)
    if ns.dry_run:
        return _dry_run(ns)
    from mpibench.cluster.launch import launch
    from mpibench.cluster.session import Options

    return launch(lambda: _resolve(ns), Options(ns.resume is not None, ns.optimal, ns.objective))


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line from rank 0, exit 2 on every rank, and no rank exits before it is said."""
    try:
        return _main(argv)
    except UsageError as err:
        if launcher_size() > 1:
            from mpibench.cluster.launch import report_together

            report_together(err)
        else:
            print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
