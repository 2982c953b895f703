"""`python -m mpibench.analyze`: report, figures and the optimum of a run file; one report over several
runs; or compare two runs as a regression gate.

    python -m mpibench.analyze results/cpu.h5 [--out DIR] [--latency-slo-ms 50]
    python -m mpibench.analyze results/a.h5 results/b.h5 [...] [--out DIR]
    python -m mpibench.analyze --compare results/base.h5 results/new.h5 [--threshold 5]

No MPI and no torch: copy the file off the cluster and run this on a laptop.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from mpibench.cli import Parser, check_directory, main_guard
from mpibench.errors import UsageError

EPILOG = """examples:
  python -m mpibench.analyze results/quick.h5                       # -> results/quick-analysis/
  python -m mpibench.analyze results/gpu.h5 --latency-slo-ms 20 --out report/
  python -m mpibench.analyze results/cpu-a.h5 results/cpu-b.h5 --out a-vs-b/    # one report over both runs
  python -m mpibench.analyze --compare results/v1.h5 results/v2.h5 --threshold 5

Exit status: 0 done (or no significant regression), 1 (--compare) a configuration regressed significantly
beyond the threshold, or one that BASE measured has no result in NEW (failed, oom, unavailable, interrupted
or missing), 2 bad input (a file that is not an mpibench run, is damaged or truncated, has a newer schema;
a bad flag)."""


def build_parser() -> Parser:
    p = Parser(prog="python -m mpibench.analyze", epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Offline analysis of an mpibench run file: report.md/.html, PNG figures and "
                           "optimal.json; of several run files: one report with their configurations matched "
                           "and their figures side by side; or --compare two runs as a regression gate.")
    p.add_argument("run", nargs="*", metavar="RUN.h5", help="the run file(s) to analyse; several give one report "
                   "over them all (each run named by its --label, else its file name; the first is the reference)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN-analysis/ next to the (first) file, "
                   "RUN-and-N-more-analysis/ for several)")
    p.add_argument("--latency-slo-ms", type=_positive, metavar="MS",
                   help="p99 latency bound for the latency objective: highest throughput whose p99 meets it")
    p.add_argument("--tpot-slo-ms", type=_positive, metavar="MS",
                   help="time-per-output-token bound for generation's tokens objective: the most output "
                        "tokens/s whose TPOT meets it")
    p.add_argument("--compare", nargs=2, metavar=("BASE.h5", "NEW.h5"),
                   help="compare two runs configuration by configuration; exit 1 on a significant regression "
                        "or a configuration BASE measured and NEW did not")
    p.add_argument("--threshold", type=_positive, default=5.0, metavar="PCT",
                   help="--compare: a significant throughput drop larger than this (%%) is a regression "
                        "(default: 5)")
    return p


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def default_out(run: Path, more: int = 0) -> Path:
    return run.with_name(f"{run.stem}-and-{more}-more-analysis" if more else f"{run.stem}-analysis")


def _analyse_runs(ns) -> int:
    from mpibench.analysis.multirun import analyze_runs, write_all

    for flag in ("latency_slo_ms", "tpot_slo_ms"):
        if getattr(ns, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} applies to one run's report; give one RUN.h5 with it")
    out = Path(ns.out) if ns.out else default_out(Path(ns.run[0]), len(ns.run) - 1)
    check_directory(out, "--out")  # before anything is read or written
    runs = analyze_runs(ns.run)
    written = write_all(runs, out)
    print(f"{len(runs.rows)} configurations over {len(runs.labels)} runs ({', '.join(runs.labels)}); "
          f"wrote {len(written)} files to {out}/ (open report.html or report.md)")
    return 0


def _analyse(ns) -> int:
    from mpibench.analysis import OBJECTIVES, analyze, write_all

    if len(ns.run) > 1:
        return _analyse_runs(ns)
    run = Path(ns.run[0])
    out = Path(ns.out) if ns.out else default_out(run)
    check_directory(out, "--out")  # before anything is read or written
    a = analyze(run, latency_slo_ms=ns.latency_slo_ms, tpot_slo_ms=ns.tpot_slo_ms)
    written = write_all(a, out)
    if not a.run.complete:
        print(f"note: {run} is from a run that did not complete; the report says what is missing")
    for objective in OBJECTIVES:
        for r in a.optimal[objective]["per_device"]:
            scope = " ".join(str(r[k]) for k in ("device", "workload") if r.get(k) not in (None, ""))
            print(f"{objective:>10} {scope}: {r['reason']}")
    print(f"wrote {len(written)} files to {out}/ (open report.html or report.md)")
    return 0


def _compare(ns) -> int:
    from mpibench.analysis.compare import compare_runs, format_table, regressed
    from mpibench.analysis.load import with_defaults
    from mpibench.store import read_tasks

    base, new = (with_defaults(read_tasks(p)) for p in ns.compare)
    rows = compare_runs(base, new, ns.threshold)
    print(format_table(rows, ns.compare[0], ns.compare[1], ns.threshold))
    return 1 if regressed(rows) else 0


def _main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.compare and ns.run:
        raise UsageError("give either RUN.h5 or --compare BASE.h5 NEW.h5, not both")
    if ns.compare:
        return _compare(ns)
    if not ns.run:
        raise UsageError("python -m mpibench.analyze: give a run file (RUN.h5) or --compare BASE.h5 NEW.h5 "
                         "(see --help)")
    return _analyse(ns)


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
