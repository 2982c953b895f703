"""Scenarios: the Poisson server against queueing theory on a virtual clock, percentile rules,
precisions and backends on the tiny model."""

import json
import math
import shutil
import time

import numpy as np
import torch
import pytest

from conftest import TINY, run_cli
from mpibench.inference.scenarios import MIN_SAMPLES, Slo, latency_percentiles, search_rate, serve
from mpibench.store import read_tasks


class VirtualClock:
    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def wait(self, t_ns: int) -> None:
        self.now = max(self.now, t_ns)


def md1(rate_sps: float, service_s: float, n: int = 60_000, batch_size: int = 1, seed: int = 3):
    clock = VirtualClock()

    def run_batch(i, k):  # a deterministic server: every batch takes service_s
        clock.now += int(service_s * 1e9)
        return [0, 0, int(service_s * 1e9), 0]

    return serve(run_batch, rate_sps, batch_size, n, seed, clock=clock, wait=clock.wait)


@pytest.mark.parametrize("rho", [0.3, 0.85])
def test_server_matches_md1_mean_latency(rho):
    d = 0.010
    run = md1(rate_sps=rho / d, service_s=d)
    expected_ms = (d + rho * d / (2 * (1 - rho))) * 1e3  # M/D/1: service + Pollaczek-Khinchine wait
    assert run.latency_ms.mean() == pytest.approx(expected_ms, rel=0.06)
    assert set(run.batch_sizes) == {1}
    assert run.achieved_rate_sps == pytest.approx(rho / d, rel=0.03)


def test_batching_forms_batches_under_load():
    run = md1(rate_sps=400, service_s=0.010, n=5000, batch_size=8)  # 4x the one-at-a-time capacity
    assert 3 < np.mean(run.batch_sizes) <= 8
    assert np.isfinite(run.p99_ms)


def test_arrivals_are_seeded():
    a, b = md1(50, 0.01, n=2000, seed=9), md1(50, 0.01, n=2000, seed=9)
    np.testing.assert_array_equal(a.latency_ms, b.latency_ms)


def test_rate_search_brackets_the_slo_rate():
    slo_ms, d = 60.0, 0.010
    best, runs = search_rate(lambda r: md1(r, d, n=20_000), Slo(slo_ms), start_sps=10.0, steps=10)
    assert best is not None and best.p99_ms <= slo_ms
    above = [r for r in runs if r.rate_sps > best.rate_sps]
    assert above and all(r.p99_ms > slo_ms for r in above)
    nearest = min(r.rate_sps for r in above)
    assert nearest / best.rate_sps < 1.1  # bracketed tightly
    assert 0.5 / d < best.rate_sps < 1 / d  # between half load and saturation


def test_a_slow_model_passes_where_its_requests_state_a_p90_only():
    # 20 requests/s capacity, SLO 500 ms: each rate within max_s = 10 s brings too few requests for a p99
    slow = lambda r: md1(r, 0.050, n=int(r * 10))  # noqa: E731 - one line
    best, runs = search_rate(slow, Slo(500.0), start_sps=10.0, steps=6, capacity_sps=20.0)
    assert best is not None and best.judged_by == 90 and best.judged_ms <= 500.0
    assert all(r.rate_sps <= 20.0 for r in runs)  # never above the measured capacity


def test_a_steady_run_that_misses_the_slo_lowers_the_rate():
    from mpibench.inference.scenarios import confirm

    best = md1(18.0, 0.050, n=100)
    run, ok = confirm(lambda r: md1(r, 0.050, n=2000), Slo(500.0), best=best)
    # 18/s at 50 ms is 90 % load: p99 ~1.2 s in a long run; 14.4/s ~0.7 s; 11.5/s ~0.4 s passes
    assert ok and run.rate_sps == pytest.approx(18.0 * 0.8 ** 2) and run.judged_ms <= 500.0
    run, ok = confirm(lambda r: md1(r, 0.050, n=2000), Slo(1.0), best=best)
    assert not ok and run.rate_sps == pytest.approx(18.0 * 0.8 ** 2)  # three tries, then it says so


def generating_server(rate_sps: float, prefill_s: float, step_s: float, new_tokens: int, n: int = 4000,
                      batch_size: int = 1, seed: int = 3):
    """A deterministic generation server on the virtual clock: each batch's prefill, then each decode step."""
    clock, steps = VirtualClock(), []

    def run_batch(i, k):
        s = [int(prefill_s * 1e9)] + [int(step_s * 1e9)] * (new_tokens - 1)
        clock.now += sum(s)
        steps.append(s)
        return [0, 0, sum(s), 0]

    run = serve(run_batch, rate_sps, batch_size, n, seed, clock=clock, wait=clock.wait)
    run.steps_ns = steps
    return run


def test_a_generation_server_times_each_request_to_its_first_token():
    prefill, step, new = 0.020, 0.005, 9  # a batch takes 60 ms
    run = generating_server(2.0, prefill, step, new)  # 12 % load: most requests find the model free
    decode_ms = (new - 1) * step * 1e3
    np.testing.assert_allclose(run.ttft_ms, run.latency_ms - decode_ms)
    assert (run.ttft_ms >= prefill * 1e3 - 1e-6).all() and np.median(run.ttft_ms) == pytest.approx(prefill * 1e3)
    np.testing.assert_allclose(run.tpot_ms, step * 1e3)
    # under load requests queue: their time to first token grows, their time per output token does not
    busy = generating_server(15.0, prefill, step, new)
    assert np.percentile(busy.ttft_ms, 90) > 2 * prefill * 1e3
    np.testing.assert_allclose(busy.tpot_ms, step * 1e3)


def test_goodput_counts_the_requests_that_met_every_token_slo():
    run = generating_server(15.0, 0.020, 0.005, 9)
    ttft_bound = float(np.median(run.ttft_ms))
    good = run.good(Slo(ttft_ms=ttft_bound, tpot_ms=6.0))
    assert good.sum() == (run.ttft_ms <= ttft_bound).sum() and 0.4 < good.mean() < 0.6
    assert not run.good(Slo(ttft_ms=1e6, tpot_ms=4.0)).any()  # every decode step takes 5 ms
    assert Slo(ttft_ms=1e6, tpot_ms=6.0).met(run) and not Slo(ttft_ms=1e6, tpot_ms=4.0).met(run)
    assert str(Slo(ttft_ms=500, tpot_ms=50)) == "TTFT <= 500 ms and TPOT <= 50 ms"


def test_the_rate_search_holds_generation_to_its_time_to_first_token():
    prefill, step, new = 0.020, 0.005, 9  # 60 ms a batch: saturates near 16.7 requests/s
    slo = Slo(ttft_ms=150.0)
    best, runs = search_rate(lambda r: generating_server(r, prefill, step, new), slo, start_sps=4.0, steps=10)
    assert best is not None and np.percentile(best.ttft_ms, 99) <= 150.0
    above = [r for r in runs if r.rate_sps > best.rate_sps]
    assert above and not any(slo.met(r) for r in above)
    assert 3.0 < best.rate_sps < 1 / (prefill + (new - 1) * step)


def test_percentiles_need_enough_samples():
    pct, note = latency_percentiles(np.arange(661.0))
    assert math.isnan(pct[99]) and np.isfinite(pct[90]) and "p99 needs >= 662" in note
    pct, note = latency_percentiles(np.arange(63.0))
    assert math.isnan(pct[90]) and math.isnan(pct[99]) and "p90 needs >= 64" in note
    pct, note = latency_percentiles(np.arange(float(MIN_SAMPLES[99])))
    assert np.isfinite(pct[99]) and note == ""


def test_scenarios_end_to_end_on_the_synthetic_model(tmp_path):
    out = tmp_path / "scen.h5"
    proc = run_cli(["--model", "synthetic", "--batch-sizes", "4", "--seq-lens", "200", "--warmup-s", "0",
                    "--min-time", "0.3", "--scenarios", "offline,single-stream,server", "--latency-slo-ms", "15",
                    "--min-requests", "700", "--server-min-s", "2", "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    row = {s: i for i, s in enumerate(t["scenario"])}
    ss = row["single-stream"]
    assert t["batch_size"][ss] == 1 and t["n_iters"][ss] >= 662 and np.isfinite(t["e2e_p99_ms"][ss])
    sv = row["server"]
    # the rate shown is the steady 2-s run's, offered no faster than the capacity measured at warm-up
    assert t["server_steady_s"][sv] >= 1.5 and t["server_rate_sps"][sv] <= t["server_capacity_sps"][sv]
    assert t["server_requests"][sv] >= 662 and t["server_judged_by"][sv] == "p99"  # thousands of requests/s
    # converged exactly when the steady run met the SLO (a busy machine may make it miss: then it says so)
    assert (t["server_p99_ms"][sv] <= 15) == bool(t["converged"][sv]), t["percentile_note"][sv]
    assert t["latency_p99_ms"][sv] == t["server_p99_ms"][sv]
    assert t["throughput_sps"][sv] == t["server_achieved_sps"][sv]
    assert 0 < t["window_coverage"][ss] <= 1 and 0 < t["window_coverage"][row["offline"]] <= 1
    assert len(json.loads(t["server_search"][sv])) >= 3  # the search and the steady run


def test_precisions_on_cpu(tmp_path):
    out = tmp_path / "prec.h5"
    proc = run_cli(["--config", TINY, "--batch-sizes", "2", "--precisions", "fp32,bf16,fp16", "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    status = dict(zip(t["precision"], t["status"]))
    assert status["fp32"] == "ok" and status["bf16"] == "ok"
    assert status["fp16"] in ("ok", "unavailable")
    assert set(t["precision_mode"][t["status"] == "ok"]) == {"cast"}
    p50 = {p: m for p, m in zip(t["precision"], t["e2e_p50_ms"])}
    ratio = p50["fp32"] / p50["bf16"]  # throughput from median latencies, as the report states it
    # the run's summary says plainly how bf16 compares, to the two digits it prints
    line = next(x for x in proc.stdout.splitlines() if x.startswith("bf16 vs fp32 on cpu: "))
    assert "throughput over batch size 2" in line
    assert float(line.split(": ")[1].split("×")[0]) == pytest.approx(ratio, abs=0.006)


def test_eager_attention_and_compile_backend(tmp_path):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile needs a C compiler (cc/gcc) for its CPU kernels")
    out = tmp_path / "compile.h5"
    proc = run_cli(["--config", TINY, "--batch-sizes", "2", "--precisions", "fp32", "--backends", "eager,compile",
                    "--attention", "sdpa,eager", "--output", out], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    assert set(t["status"]) == {"ok"}, t["message"]
    assert sorted(zip(t["backend"], t["attention"])) == [("compile", "eager"), ("compile", "sdpa"),
                                                         ("eager", "eager"), ("eager", "sdpa")]
    compiled = t["backend"] == "compile"
    assert (t["compile_s"][compiled] > 0).all() and np.isnan(t["compile_s"][~compiled]).all()


def test_preprocess_ahead_hands_over_the_same_batches_without_tokenising(monkeypatch):
    from mpibench.inference.model import InferenceWorkload, build_model

    built = build_model("distilbert-tiny", 2, "cpu", "fp32", seed=0)
    inline = InferenceWorkload(built, 4, 32, seed=1)
    ahead = InferenceWorkload(built, 4, 32, seed=1, ahead=True)
    monkeypatch.setattr(ahead, "tokenise", lambda texts: pytest.fail("tokenised in the timed loop"))
    for i in range(10):
        for a, b in zip(ahead.preprocess(i), inline.preprocess(i)):
            assert torch.equal(a, b)
    ahead.k = inline.k = 2  # the server scenario's smaller batches
    assert all(torch.equal(a, b) for a, b in zip(ahead.preprocess(3), inline.preprocess(3)))
    assert ahead.preprocess(3)[0].shape == (2, 32)


def test_preprocess_ahead_end_to_end(tmp_path):
    rows = {}
    for mode in ("inline", "ahead"):
        out = tmp_path / f"{mode}.h5"
        proc = run_cli(["--config", TINY, "--batch-sizes", "4", "--precisions", "fp32", "--preprocess", mode, "--output", out])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        t = read_tasks(out)
        assert list(t["status"]) == ["ok"] and list(t["preprocess_mode"]) == [mode]
        rows[mode] = t
    # tokenising 4 texts takes a fraction of a millisecond; handing over ready tensors takes microseconds
    assert rows["ahead"]["preprocess_p50_ms"][0] < rows["inline"]["preprocess_p50_ms"][0] / 5


def test_a_server_run_ends_at_max_s_at_a_low_rate():
    clock = VirtualClock()
    run = serve(lambda i, k: [0, 0, 1000, 0], rate_sps=0.5, batch_size=1, n_requests=1000, seed=1,
                clock=clock, wait=clock.wait, max_s=30.0)
    assert 1 <= len(run.latency_ms) < 1000  # ~15 of the 1000 requests arrive within 30 s
    assert run.duration_s <= 30.0 + 1e-6


def test_the_wait_between_arrivals_looks_at_the_stop_flag():
    from mpibench.inference.runner import Interrupted
    from mpibench.inference.scenarios import STOP_CHECK_S, sleep_until

    stop_at = time.monotonic() + 0.3

    def check_stop():
        if time.monotonic() > stop_at:
            raise Interrupted("stopped by SIGTERM")

    wait = sleep_until(time.perf_counter_ns, check_stop)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        wait(time.perf_counter_ns() + int(3600e9))  # an hour to the next arrival
    assert time.monotonic() - t0 < 0.3 + STOP_CHECK_S + 5  # generous: a busy machine may be slow to wake
