"""Offline analysis of a run file: batch profile, the optimum with its evidence, figures, report, comparison.

Runs on a laptop: numpy, h5py and matplotlib only (no torch, no MPI). Names load lazily, so that
`from mpibench.analysis.optimum import choose_optimal` (used by `mpibench.run --optimal`) does not
import matplotlib.

    from mpibench.analysis import analyze, write_all, choose_optimal
    a = analyze("results/quick.h5", latency_slo_ms=50)
    write_all(a, "results/quick-analysis")
"""

from importlib import import_module

_WHERE = {"compare_runs": "compare", "regressed": "compare", "Run": "load", "load_run": "load",
          "OBJECTIVES": "optimum", "choose_optimal": "optimum", "Analysis": "pipeline", "analyze": "pipeline",
          "optimal_json": "pipeline", "batch_profile": "profile", "write_all": "report"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"mpibench.analysis.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mpibench.analysis' has no attribute {name!r}")
