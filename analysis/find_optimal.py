#!/usr/bin/env python
"""The recommended configuration of a run, per device and overall, with the evidence.

    python analysis/find_optimal.py results/cpu.h5 [--objective throughput|latency|energy|all]
                                    [--latency-slo-ms 50] [--json]

Ties (overlapping 95 % CIs) go to the cheaper configuration; failed, interrupted and unconverged
configurations are never chosen. The logic is mpibench.analysis.optimum.choose_optimal.
"""

import json
import sys

from mpibench.analysis import OBJECTIVES, analyze, optimal_json
from mpibench.analysis.table import fmt, label
from mpibench.cli import Parser, main_guard


def _main(argv=None) -> int:
    p = Parser(prog="find_optimal.py", description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="RUN.h5")
    p.add_argument("--objective", choices=(*OBJECTIVES, "all"), default="all")
    p.add_argument("--latency-slo-ms", type=float, metavar="MS", help="p99 bound for the latency objective")
    p.add_argument("--json", action="store_true", help="print optimal.json's content instead of text")
    ns = p.parse_args(argv)
    a = analyze(ns.run, latency_slo_ms=ns.latency_slo_ms)
    objectives = OBJECTIVES if ns.objective == "all" else (ns.objective,)
    if ns.json:
        doc = optimal_json(a)
        doc["objectives"] = {k: v for k, v in doc["objectives"].items() if k in objectives}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for obj in objectives:
        for scope in ("per_device", "overall"):
            for r in a.optimal[obj][scope]:
                where = r["device"] if scope == "per_device" else "overall"
                best = (f"{label(r)}: {fmt(r['value'])} {r['unit']}" if r["batch_size"] is not None
                        else "no recommendation")
                print(f"{obj:>10} {where:>8}  {best}\n{'':>20}{r['reason']}")
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
