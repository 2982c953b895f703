"""Statistics and the Runner's stopping rule, checked exactly with a seeded fake clock."""

import math

import numpy as np
import pytest

from mpibench.config import MeasureConfig
from mpibench.inference.runner import Interrupted, Runner
from mpibench.stats import PHASES, median_ci, summarize


class FakeClock:
    """A nanosecond clock that only moves when the fake workload says so."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeWorkload:
    """Each phase advances the fake clock by seeded durations (ns)."""

    def __init__(self, clock: FakeClock, seed: int, base_ns=(200_000, 10_000, 1_000_000, 30_000), jitter=0.1):
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.base = base_ns
        self.jitter = jitter
        self.log: list[list[int]] = []  # every iteration's phase durations, cold and warm-up included

    def _advance(self, k: int) -> None:
        d = int(self.base[k] * (1 + self.jitter * self.rng.standard_normal()))
        d = max(d, 1)
        self.clock.now += d
        if k == 0:
            self.log.append([])
        self.log[-1].append(d)

    def preprocess(self, i):
        self._advance(0)
        return i

    def h2d(self, x):
        self._advance(1)
        return x

    def forward(self, x):
        self._advance(2)
        return x

    def postprocess(self, y):
        self._advance(3)
        return y


def measure(jitter=0.1, **kw):
    clock = FakeClock()
    w = FakeWorkload(clock, seed=7, jitter=jitter)
    cfg = MeasureConfig(**{"warmup_iters": 3, "warmup_s": 0.0, "min_time_s": 0.05, "min_iters": 10,
                           "max_time_s": 1.0, "target_ci": 0.02, **kw})
    return Runner(cfg, clock=clock).run(w), w


def test_raw_samples_are_exactly_the_phase_durations():
    m, w = measure()
    measured = np.array(w.log[1 + m.warmup_iters:])  # after the cold call and the warm-up
    assert m.cold_ns == sum(w.log[0])
    assert m.warmup_iters == 3
    assert m.n_iters == len(measured)
    for k, p in enumerate(PHASES):
        np.testing.assert_array_equal(m.raw_ns[p], measured[:, k])


def test_summary_matches_numpy_exactly():
    m, _ = measure()
    row = summarize(m.raw_ns, batch_size=4)
    e2e_ms = sum(m.raw_ns[p] for p in PHASES) / 1e6
    assert row["n_iters"] == len(e2e_ms)
    assert row["e2e_mean_ms"] == pytest.approx(e2e_ms.mean(), rel=1e-12)
    assert row["e2e_p50_ms"] == pytest.approx(np.percentile(e2e_ms, 50), rel=1e-12)
    assert row["e2e_p99_ms"] == pytest.approx(np.percentile(e2e_ms, 99), rel=1e-12)
    assert row["e2e_p50_ms"] <= row["e2e_p90_ms"] <= row["e2e_p99_ms"]
    assert row["throughput_sps"] == pytest.approx(4 / (np.median(e2e_ms) / 1e3), rel=1e-12)  # the median's
    assert row["throughput_ci_low_sps"] == pytest.approx(4 / (row["e2e_ci_high_ms"] / 1e3), rel=1e-12)
    assert row["throughput_ci_high_sps"] == pytest.approx(4 / (row["e2e_ci_low_ms"] / 1e3), rel=1e-12)
    assert row["throughput_mean_sps"] == pytest.approx(4 / (e2e_ms.mean() / 1e3), rel=1e-12)
    assert row["latency_p99_ms"] == row["e2e_p99_ms"]
    fwd_ms = m.raw_ns["forward"] / 1e6
    assert row["forward_throughput_sps"] == pytest.approx(4 / (np.median(fwd_ms) / 1e3), rel=1e-12)
    assert row["e2e_ci_low_ms"] <= row["e2e_p50_ms"] <= row["e2e_ci_high_ms"]


def test_stops_when_ci_is_tight_and_min_time_reached():
    m, _ = measure(jitter=0.0)  # constant durations: the CI has zero width at once
    per_iter_s = (200_000 + 10_000 + 1_000_000 + 30_000) / 1e9
    assert m.converged
    assert m.n_iters == math.ceil(0.05 / per_iter_s)  # min_time is the binding rule
    assert m.measure_s == pytest.approx(m.n_iters * per_iter_s)


def test_min_iters_binds_when_min_time_is_short():
    m, _ = measure(jitter=0.0, min_time_s=0.0, min_iters=25)
    assert m.converged and m.n_iters == 25


def test_max_time_ends_an_unconverged_run():
    m, _ = measure(jitter=0.5, target_ci=0.0001, max_time_s=0.2)
    assert not m.converged
    assert 0.2 <= m.measure_s < 0.2 + 0.01


def test_a_stop_request_interrupts():
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    clock = FakeClock()
    with pytest.raises(Interrupted):
        Runner(MeasureConfig(warmup_iters=1, warmup_s=0), clock=clock, should_stop=stop).run(
            FakeWorkload(clock, 0))


def test_median_ci_order_statistics():
    x = np.arange(1, 101, dtype=float)  # n = 100: the 40th and 61st order statistics
    assert median_ci(x) == (40.0, 61.0)
    lo, hi = median_ci(np.array([1.0, 2.0, 3.0]))
    assert lo == -math.inf and hi == math.inf  # too few samples to claim 95 %


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        lo, hi = median_ci(rng.exponential(size=50))
        hits += lo <= math.log(2) <= hi
    assert 0.93 <= hits / 2000 <= 0.985


def test_the_warm_up_ends_at_max_time_whatever_is_left():
    m, w = measure(jitter=0.0, warmup_iters=1_000_000, warmup_s=0.5, max_time_s=0.5)
    per_iter_s = (200_000 + 10_000 + 1_000_000 + 30_000) / 1e9
    assert m.warmup_iters == math.ceil(0.5 / per_iter_s)  # not a million: max_time_s ended it
    assert m.n_iters >= 1
