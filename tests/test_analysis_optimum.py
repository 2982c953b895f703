"""The optimum rules on hand-built tables with known answers: ties, the SLO, energy, ineligible rows."""

import math

import numpy as np
import pytest

from mpibench.analysis.optimum import ENERGY_TIE, choose_optimal


def table(*rows: dict) -> dict[str, np.ndarray]:
    """A /tasks-like table from short specs: thr (samples/s), ci (relative half-width of the median's CI)."""
    full = []
    for i, r in enumerate(rows):
        r = dict(r)
        bs, thr, ci = r.pop("bs"), r.pop("thr", math.nan), r.pop("ci", 0.01)
        p50 = bs * 1e3 / thr
        full.append({"task_id": i, "model": "m", "device": "cpu", "precision": "fp32", "batch_size": bs,
                     "seq_len": 128, "threads": 4, "status": "ok", "converged": True, "message": "",
                     "e2e_p50_ms": p50, "e2e_ci_low_ms": p50 * (1 - ci), "e2e_ci_high_ms": p50 * (1 + ci),
                     "e2e_p99_ms": p50 * 1.2, "throughput_sps": thr, "j_per_sample": math.nan, "energy_status": "unavailable", **r})
    return {k: np.array([row[k] for row in full]) for k in full[0]}


def only(recs: list[dict]) -> dict:
    assert len(recs) == 1, recs
    return recs[0]


def test_clear_winner_with_its_ci():
    t = table({"bs": 1, "thr": 100}, {"bs": 2, "thr": 180}, {"bs": 4, "thr": 300}, {"bs": 8, "thr": 250})
    r = only(choose_optimal(t))
    assert (r["device"], r["batch_size"], r["precision"], r["objective"]) == ("cpu", 4, "fp32", "throughput")
    assert r["value"] == pytest.approx(300)
    assert r["ci_low"] < 300 < r["ci_high"] and r["tied_with"] == []
    assert r["ci_low"] == pytest.approx(300 / 1.01) and r["ci_high"] == pytest.approx(300 / 0.99)
    assert "highest throughput" in r["reason"]


def test_overlapping_cis_tie_and_the_smaller_batch_wins():
    t = table({"bs": 2, "thr": 180}, {"bs": 4, "thr": 300, "ci": 0.03}, {"bs": 8, "thr": 305, "ci": 0.03},
              {"bs": 16, "thr": 302, "ci": 0.03})
    r = only(choose_optimal(t))
    assert r["batch_size"] == 4
    assert sorted(x["batch_size"] for x in r["tied_with"]) == [8, 16]
    assert "ties with" in r["reason"] and "cheaper" in r["reason"]
    assert "bs=8" in r["reason"]  # the best point estimate is named


def test_equal_batch_ties_go_to_lower_latency_then_the_more_exact_precision():
    t = table({"bs": 4, "thr": 300, "precision": "bf16"}, {"bs": 4, "thr": 301, "precision": "fp32"})
    assert only(choose_optimal(t))["precision"] == "fp32"  # higher throughput = lower latency
    t = table({"bs": 4, "thr": 300, "precision": "bf16"}, {"bs": 4, "thr": 300, "precision": "fp32"})
    assert only(choose_optimal(t))["precision"] == "fp32"


def test_unconverged_failed_and_interrupted_rows_are_never_chosen():
    t = table({"bs": 1, "thr": 100}, {"bs": 2, "thr": 200},
              {"bs": 4, "thr": 900, "converged": False},
              {"bs": 8, "thr": 950, "status": "interrupted", "message": "rank 1 on n1: SIGTERM"},
              {"bs": 16, "thr": math.nan, "status": "oom", "message": "rank 2 on n1: CUDA out of memory"},
              {"bs": 32, "thr": math.nan, "status": "failed", "message": "boom"})
    r = only(choose_optimal(t))
    assert r["batch_size"] == 2
    why = {e["batch_size"]: e["why"] for e in r["excluded"]}
    assert why == {4: "did not converge", 8: "interrupted", 16: "oom", 32: "failed"}
    assert "never chosen" in r["reason"] and "did not converge" in r["reason"]


def test_nothing_eligible_says_why():
    t = table({"bs": 1, "thr": math.nan, "status": "failed"}, {"bs": 2, "thr": 50, "converged": False})
    r = only(choose_optimal(t))
    assert r["batch_size"] is None and math.isnan(r["value"])
    assert "none of the 2 configurations" in r["reason"]


def test_latency_slo_then_highest_throughput():
    t = table({"bs": 1, "thr": 200, "e2e_p99_ms": 5.0}, {"bs": 2, "thr": 250, "e2e_p99_ms": 8.0},
              {"bs": 4, "thr": 330, "e2e_p99_ms": 12.0})
    r = only(choose_optimal(t, "latency", latency_slo_ms=10))
    assert r["batch_size"] == 2 and r["unit"] == "samples/s" and r["p99_ms"] == 8.0
    assert "p99 ≤ 10 ms" in r["reason"]
    none = only(choose_optimal(t, "latency", latency_slo_ms=4))
    assert none["batch_size"] is None
    assert "no configuration meets p99 ≤ 4 ms" in none["reason"] and "5 ms" in none["reason"]


def test_latency_without_slo_is_the_lowest_p99():
    t = table({"bs": 1, "thr": 200, "e2e_p99_ms": 5.0}, {"bs": 2, "thr": 250, "e2e_p99_ms": 8.0})
    r = only(choose_optimal(t, "latency"))
    assert r["batch_size"] == 1 and r["value"] == 5.0 and r["unit"] == "ms"


def test_latency_ties_use_the_p99_ci_where_it_is_known():
    t = table({"bs": 1, "thr": 200, "e2e_p99_ms": 5.0, "p99_ci_low_ms": 4.8, "p99_ci_high_ms": 6.0,
               "precision": "bf16"},
              {"bs": 1, "thr": 180, "e2e_p99_ms": 5.5, "p99_ci_low_ms": 5.2, "p99_ci_high_ms": 5.9})
    r = only(choose_optimal(t, "latency"))
    assert r["precision"] == "bf16" and [x["precision"] for x in r["tied_with"]] == ["fp32"]
    assert (r["ci_low"], r["ci_high"]) == (4.8, 6.0)
    # without the raw samples' p99 bounds (the table alone), ties follow the median's CI
    t = table({"bs": 1, "thr": 200, "e2e_p99_ms": 5.0},
              {"bs": 1, "thr": 199, "e2e_p99_ms": 5.5, "precision": "bf16"},
              {"bs": 2, "thr": 150, "ci": 0.001, "e2e_p99_ms": 7.0})
    r = only(choose_optimal(t, "latency"))
    assert r["precision"] == "fp32" and [x["precision"] for x in r["tied_with"]] == ["bf16"]
    assert math.isnan(r["ci_low"]) and "no CI" in r["reason"]


def test_energy_unavailable_cannot_be_chosen():
    t = table({"bs": 1, "thr": 100}, {"bs": 2, "thr": 200})
    r = only(choose_optimal(t, "energy"))
    assert r["batch_size"] is None and "not measured" in r["reason"]


def test_energy_within_tolerance_ties_to_the_smaller_batch():
    t = table({"bs": 2, "thr": 100, "j_per_sample": 0.60, "energy_status": "ok"},
              {"bs": 8, "thr": 300, "j_per_sample": 0.40, "energy_status": "ok"},
              {"bs": 64, "thr": 330, "j_per_sample": 0.40 * (1 - ENERGY_TIE / 2), "energy_status": "ok"},
              {"bs": 128, "thr": 340, "j_per_sample": 0.10, "energy_status": "permission"})
    r = only(choose_optimal(t, "energy"))
    assert r["batch_size"] == 8 and [x["batch_size"] for x in r["tied_with"]] == [64]
    assert r["unit"] == "J/sample" and "energy not measured" in r["reason"]  # the 0.10 without a reading


def test_one_per_device_and_workload_and_one_overall():
    t = table({"bs": 1, "thr": 100}, {"bs": 2, "thr": 200},
              {"bs": 1, "thr": 1000, "device": "cuda:0"}, {"bs": 2, "thr": 1900, "device": "cuda:0"},
              {"bs": 1, "thr": 30, "seq_len": 512}, {"bs": 2, "thr": 40, "seq_len": 512})
    per_device = choose_optimal(t)
    assert [(r["device"], r["seq_len"], r["batch_size"]) for r in per_device] == [
        ("cpu", 128, 2), ("cpu", 512, 2), ("cuda:0", 128, 2)]
    overall = choose_optimal(t, per="overall")
    assert [(r["device"], r["seq_len"]) for r in overall] == [("cuda:0", 128), ("cpu", 512)]


def test_a_resumed_run_uses_the_configurations_ok_row():
    t = table({"bs": 2, "thr": math.nan, "status": "failed"}, {"bs": 2, "thr": 200}, {"bs": 1, "thr": 100})
    r = only(choose_optimal(t))
    assert r["batch_size"] == 2 and r["task_id"] == 1 and r["excluded"] == []


def test_bad_arguments_and_empty_tables():
    t = table({"bs": 1, "thr": 100})
    with pytest.raises(ValueError, match="objective"):
        choose_optimal(t, "speed")
    with pytest.raises(ValueError, match="per"):
        choose_optimal(t, per="host")
    assert choose_optimal({}) == []


def test_newer_key_columns_keep_configurations_apart_and_scenarios_unmixed():
    t = table({"bs": 4, "thr": 300, "backend": "eager", "scenario": "offline"},
              {"bs": 4, "thr": 400, "backend": "compile", "scenario": "offline"},
              {"bs": 1, "thr": 900, "backend": "eager", "scenario": "server"})
    offline, server = choose_optimal(t)
    assert (offline["scenario"], offline["backend"]) == ("offline", "compile")
    assert offline["value"] == pytest.approx(400)
    assert "compile" in offline["reason"] and server["scenario"] == "server" and server["batch_size"] == 1


def generation(*rows: dict) -> dict[str, np.ndarray]:
    """Generation rows: tok (output tokens/s, its CI +-1 %), tpot (ms, CI +-5 %); a classify row beside them."""
    specs = [{"bs": r["bs"], "thr": r["tok"] / 8, "workload": "generate", "output_tokens_per_s": r["tok"],
              "output_tokens_ci_low_per_s": r["tok"] * 0.99, "output_tokens_ci_high_per_s": r["tok"] * 1.01,
              "tpot_mean_ms": r["tpot"], "tpot_ci_low_ms": r["tpot"] * 0.95, "tpot_ci_high_ms": r["tpot"] * 1.05,
              "ttft_p50_ms": 10.0} for r in rows]
    specs.append({"bs": 64, "thr": 1e6, "workload": "classify", "output_tokens_per_s": math.nan,
                  "output_tokens_ci_low_per_s": math.nan, "output_tokens_ci_high_per_s": math.nan,
                  "tpot_mean_ms": math.nan, "tpot_ci_low_ms": math.nan, "tpot_ci_high_ms": math.nan,
                  "ttft_p50_ms": math.nan})
    return table(*specs)


def test_tokens_objective_takes_the_most_tokens_per_second_under_the_tpot_slo():
    t = generation({"bs": 1, "tok": 100, "tpot": 10}, {"bs": 8, "tok": 500, "tpot": 16}, {"bs": 32, "tok": 900, "tpot": 35})
    best = only(choose_optimal(t, "tokens"))  # the classify row is no candidate, not even a scope
    assert (best["batch_size"], best["unit"], best["value"]) == (32, "tokens/s", 900)
    bounded = only(choose_optimal(t, "tokens", tpot_slo_ms=20))
    assert bounded["batch_size"] == 8 and "TPOT ≤ 20 ms" in bounded["reason"] and "TPOT 16 ms" in bounded["reason"]
    marginal = only(choose_optimal(t, "tokens", tpot_slo_ms=16.5))  # 16 ms, but its CI reaches 16.8
    assert marginal["batch_size"] == 8 and "marginal" in marginal["reason"]
    none = only(choose_optimal(t, "tokens", tpot_slo_ms=5))
    assert none["batch_size"] is None and "no configuration meets TPOT ≤ 5 ms; the lowest TPOT is 10 ms" in none["reason"]
    assert choose_optimal(table({"bs": 1, "thr": 10}), "tokens") == []  # nothing generated: no answer at all
