#!/usr/bin/env python
"""Scaling of a run: aggregate throughput and parallel efficiency against ranks and nodes.

    python analysis/scaling_report.py results/scaling.h5 [--out DIR]

Reads the file's /scaling group, prints one line per configuration and the table, and writes
scaling_ranks.png (and scaling_nodes.png when the run spanned several node counts).
"""

import sys
from pathlib import Path

from mpibench.analysis import analyze, figures_scaling
from mpibench.analysis.scaling import describe
from mpibench.analysis.table import fmt
from mpibench.cli import Parser, main_guard
from mpibench.errors import UsageError


def _main(argv=None) -> int:
    p = Parser(prog="scaling_report.py", description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="RUN.h5")
    p.add_argument("--out", metavar="DIR", help="where the figures go (default: RUN-analysis/)")
    ns = p.parse_args(argv)
    a = analyze(ns.run)
    s = a.run.scaling
    if s is None:
        raise UsageError(f"{ns.run!r} has no /scaling group: it is not from a scaling run")
    for row in a.scaling:
        print(describe(row))
    print(f"\n{'ranks':>5} {'nodes':>5} {'aggregate samples/s':>20} {'per rank':>10} {'efficiency':>10}")
    for i in range(len(s["n_ranks"])):
        print(f"{s['n_ranks'][i]:>5} {s['n_nodes'][i]:>5} {fmt(s['aggregate_throughput_sps'][i]):>20} "
              f"{fmt(s['per_rank_throughput_sps'][i]):>10} {s['efficiency'][i]:>10.0%}")
    out = Path(ns.out) if ns.out else Path(ns.run).with_name(Path(ns.run).stem + "-analysis")
    out.mkdir(parents=True, exist_ok=True)
    made = [f(a, out) for f in (figures_scaling.by_ranks, figures_scaling.by_nodes)]
    print("\nfigures: " + ", ".join(str(m.path) for m in made if m))
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
