"""`--optimal`: from a results file, and by a quick successive-halving search."""

import pytest

from conftest import run_cli
from mpibench.analysis.optimum import choose_optimal
from mpibench.store import read_attrs, read_log, read_tasks

SYNTH = ["--model", "synthetic", "--seq-lens", "100", "--warmup-s", "0", "--min-time", "0.3"]


@pytest.mark.mpi
def test_search_then_final(tmp_path):
    out = tmp_path / "search.h5"
    # short sequences: the fixed cost of a call dominates, so per-sample time halves with each batch size
    # (16 beats 8 by ~40 %, more than a busy machine's noise)
    proc = run_cli(["--model", "synthetic", "--seq-lens", "10", "--warmup-s", "0", "--min-time", "0.3",
                    "--batch-sizes", "1,2,4,8,16", "--optimal", "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    stages = list(t["stage"])
    assert stages.count("search-1") == 5 and stages.count("final") == 1
    assert stages.count("search-2") == 3  # the better half (rounded up) goes on
    final = stages.index("final")
    assert t["batch_size"][final] == 16
    log = read_log(out)
    assert read_attrs(out)["optimal_objective"] == "throughput"
    assert log[0].startswith("search-1") and "kept 3 of 5" in log[0]


@pytest.mark.mpi
def test_from_a_file_runs_the_chosen_configuration(tiny_run_4, tmp_path):
    out = tmp_path / "opt.h5"
    proc = run_cli(["--optimal", tiny_run_4, "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    chosen = choose_optimal(read_tasks(tiny_run_4), "throughput")[0]
    t = read_tasks(out)
    assert list(t["stage"]) == ["final"] and t["status"][0] == "ok"
    assert (t["precision"][0], t["batch_size"][0]) == (chosen["precision"], chosen["batch_size"])
    again = run_cli(["--resume", out])
    assert again.returncode == 2 and "--optimal run" in again.stderr


def test_the_tokens_objective_scores_generation_under_its_tpot_bound():
    from mpibench.optimal import score

    gen = {"status": "ok", "workload": "generate", "output_tokens_per_s": 900.0, "tpot_mean_ms": 30.0}
    assert score(gen, "tokens", None) == 900.0 and score(gen, "tokens", 40.0) == 900.0
    assert score(gen, "tokens", 20.0) == float("-inf")  # misses the TPOT bound
    assert score({**gen, "workload": "classify"}, "tokens", None) == float("-inf")  # makes no tokens
    assert score({**gen, "status": "failed"}, "tokens", None) == float("-inf")
