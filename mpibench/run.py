"""`python -m mpibench.run`: plan a sweep on rank 0, measure it on every other rank, gather one HDF5 file.

    python -m mpibench.run --config configs/quick.yaml                 # one rank, serial
    mpirun -n 4 python -m mpibench.run --config configs/cpu.yaml       # rank 0 coordinates, 3 measure
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from mpibench import __version__
from mpibench.cli import (Parser, add_config_flags, check_output, launcher_rank, launcher_size,
                          load_config, overrides)
from mpibench.config import Config, build, merge
from mpibench.errors import UsageError
from mpibench.plan import estimate_total, expand

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
    """The config of this run: from files and flags, or the one stored in the file (--optimal, --resume)."""
    if ns.optimal:
        return _optimal_config(ns)
    if ns.resume is not None:
        return _resume_config(ns)
    cfg = load_config(ns.config, ns)
    check_output(cfg.output.path, overwrite=cfg.output.overwrite)
    jsonl = cfg.output.jsonl
    if jsonl is not None and jsonl.exists() and not cfg.output.overwrite:
        raise UsageError(f"--jsonl: {str(jsonl)!r} already exists; pass --overwrite or choose another path")
    return cfg


def _optimal_config(ns) -> Config:
    """--optimal RUN.h5: the file's own sweep, with flags on top; a new output file beside it."""
    from mpibench.store import read_attrs

    stored = yaml.safe_load(read_attrs(ns.optimal)["config_yaml"])
    stored["output"] = {"path": str(Path(ns.optimal).with_name(Path(ns.optimal).stem + "-optimal.h5")),
                        "overwrite": False, "jsonl": None}
    cfg = build(merge(stored, overrides(ns)), source=f"--optimal {ns.optimal}")
    check_output(cfg.output.path, overwrite=cfg.output.overwrite)
    return cfg


def _resume_config(ns) -> Config:
    """--resume RUN.h5: the stored config, appending to the same file."""
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


def _main(argv: list[str] | None = None) -> int:
    """Parse, then either print the plan or hand the run to the cluster layer (which validates on rank 0)."""
    ns = build_parser().parse_args(argv)
    if ns.dry_run:
        return _dry_run(load_config(ns.config, ns))
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
