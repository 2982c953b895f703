#!/usr/bin/env python
"""Scaling of a run: aggregate throughput and parallel efficiency against ranks and nodes.

    python analysis/scaling_report.py results/scaling.h5 [--out DIR]

Reads the file's /scaling group, prints one line per configuration and the table, and writes
scaling_ranks.png (and scaling_nodes.png when the run spanned several node counts).
"""

import sys
from pathlib import Path

from mpibench.analysis import figures_scaling
from mpibench.analysis.scaling import describe, summary
from mpibench.analysis.table import fmt, n_rows
from mpibench.analyze import default_out
from mpibench.cli import Parser, main_guard
from mpibench.errors import UsageError
from mpibench.store import read_scaling


def _main(argv=None) -> int:
    p = Parser(prog="scaling_report.py", description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="RUN.h5")
    p.add_argument("--out", metavar="DIR", help="where the figures go (default: RUN-analysis/)")
    ns = p.parse_args(argv)
    s = read_scaling(ns.run)  # only the /scaling table: no raw statistics, no batch profile
    if not n_rows(s):
        raise UsageError(f"{ns.run!r} has no /scaling group: it is not from a scaling run")
    for row in summary(s):
        print(describe(row))
    print(f"\n{'ranks':>5} {'nodes':>5} {'aggregate samples/s':>20} {'per rank':>10} {'efficiency':>10}")
    for i in range(len(s["n_ranks"])):
        print(f"{s['n_ranks'][i]:>5} {s['n_nodes'][i]:>5} {fmt(s['aggregate_throughput_sps'][i]):>20} "
              f"{fmt(s['per_rank_throughput_sps'][i]):>10} {s['efficiency'][i]:>10.0%}")
    out = Path(ns.out) if ns.out else default_out(Path(ns.run))
    out.mkdir(parents=True, exist_ok=True)
    made = [f(s, out) for f in (figures_scaling.ranks_figure, figures_scaling.nodes_figure)]
    print("\nfigures: " + ", ".join(str(m.path) for m in made if m))
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
