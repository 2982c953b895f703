"""The benchmark scripts run and end with their `name: value` line (their figures are not judged here)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT, mpi_env

SCRIPTS = {"overhead.py": "harness_overhead_ratio", "energy_overhead.py": "energy_overhead_ratio",
           "analysis_scale.py": "analysis_seconds_per_million_samples", "dispatch.py": "dispatch_makespan_ratio",
           "agreement.py": "agreement_max_rel_diff", "repeatability.py": "repeatability_spread",
           "ingest.py": "ingest_results_per_s", "hierarchy.py": "coordinator_max_ranks_at_1s",
           "coverage.py": "ci_coverage"}
#: Figures that may be 0 in a smoke run (two short runs of a tiny model can disagree entirely).
MAY_BE_ZERO = {"ci_coverage"}


@pytest.mark.parametrize("script, name", sorted(SCRIPTS.items()))
def test_benchmark_runs_quick(script, name):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                          capture_output=True, text=True, timeout=600, env=mpi_env())
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(rf"{name}: ([0-9.]+)", last)
    assert m and (float(m.group(1)) > 0 or name in MAY_BE_ZERO), last
