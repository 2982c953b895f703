"""Offline analysis of a run file: batch profile, the optimum with its evidence, figures, report, comparison.

Runs on a laptop: numpy, h5py and matplotlib only (no torch, no MPI).

    from mpibench.analysis import analyze, write_all, choose_optimal
    a = analyze("results/quick.h5", latency_slo_ms=50)
    write_all(a, "results/quick-analysis")
"""

from mpibench.analysis.compare import compare_runs, regressed
from mpibench.analysis.load import Run, load_run
from mpibench.analysis.optimum import OBJECTIVES, choose_optimal
from mpibench.analysis.pipeline import Analysis, analyze, optimal_json
from mpibench.analysis.profile import batch_profile
from mpibench.analysis.report import write_all

__all__ = ["Analysis", "OBJECTIVES", "Run", "analyze", "batch_profile", "choose_optimal", "compare_runs",
           "load_run", "optimal_json", "regressed", "write_all"]
