#!/usr/bin/env python
"""The batch profile of a run: per-sample latency against batch size, with the anomalies tested.

    python analysis/analyze_batch_profile.py results/cpu.h5 [--out DIR]

Prints one table per series (device, precision, sequence length, threads) and writes
per_sample_latency.png, throughput.png and phases.png. The logic is mpibench.analysis.profile.
"""

import math
import sys
from pathlib import Path

from mpibench.analysis import analyze, figures
from mpibench.analysis.profile import SERIES
from mpibench.analysis.table import config_of, fmt, group_rows, label, present
from mpibench.analyze import default_out
from mpibench.cli import Parser, main_guard


def _main(argv=None) -> int:
    p = Parser(prog="analyze_batch_profile.py", description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="RUN.h5")
    p.add_argument("--out", metavar="DIR", help="where the figures go (default: RUN-analysis/)")
    ns = p.parse_args(argv)
    a = analyze(ns.run)
    t = a.tasks
    for idx in group_rows(t, present(t, SERIES), a.rows[t["status"][a.rows] == "ok"]).values():
        print(f"\n{label(config_of(t, idx[0]), ('batch_size',))}")
        print(f"  {'batch':>5}  {'ms/sample [95 % CI]':>26}  {'vs previous':>12}  {'vs trend':>9}  anomaly")
        for i in idx:
            prev = (f"{t['vs_prev_pct'][i]:+.1f} %" + ("*" if t["vs_prev_significant"][i] else " ")
                    if math.isfinite(t["vs_prev_pct"][i]) else "")
            trend = f"{t['departure_pct'][i]:+.1f} %" if math.isfinite(t["departure_pct"][i]) else ""
            ci = (f"{fmt(t['per_sample_ms'][i])} [{fmt(t['per_sample_ci_low_ms'][i])}, "
                  f"{fmt(t['per_sample_ci_high_ms'][i])}]")
            print(f"  {t['batch_size'][i]:>5}  {ci:>26}  {prev:>12}  {trend:>9}  {t['anomaly'][i]}")
    print("\n* = 95 % CIs apart. " + ("; ".join(f["text"] for f in a.anomalies) if a.anomalies
                                     else "No batch anomaly: no batch size departs from its neighbours' trend."))
    out = Path(ns.out) if ns.out else default_out(Path(ns.run))
    out.mkdir(parents=True, exist_ok=True)
    made = [f(a, out) for f in (figures.per_sample_latency, figures.throughput, figures.phases)]
    print("figures: " + ", ".join(str(m.path) for m in made if m))
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
