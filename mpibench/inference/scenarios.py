"""Scenarios after MLPerf LoadGen beyond `offline`: latency percentiles and the Poisson server.

- single-stream: one sample at a time; percentiles only with enough samples to state them
  (MLPerf: >= 64 for a p90, >= 662 for a p99 at 99 % confidence), else NaN and a note.
- server: requests arrive as a Poisson process at a target rate (seeded, reproducible); whenever the
  model is free it takes every request that has arrived, up to the batch size, as one batch. A
  request's latency runs from its arrival to the end of its batch (queueing included).
  `search_rate` finds the highest rate whose p99 stays under a bound. Generation is batched the same
  way (statically: a batch runs all its tokens before the next one starts); each request's time to
  first token runs from its arrival to its batch's prefill, and goodput counts the requests per second
  that met both token SLOs (`ServerRun.good`).

The clock and the wait are parameters, so tests drive a server with a known service time on a
virtual clock and compare it with queueing theory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mpibench.inference.runner import Measurement, Runner, Workload, energy_window
from mpibench.stats import PHASES, median_ci
from mpibench.stopping import sleep_unless

MIN_SAMPLES = {50: 1, 90: 64, 99: 662}


def withheld(n: int) -> tuple[list[int], str]:
    """The percentiles that n samples are too few to state, and a note saying so."""
    short = [p for p, need in MIN_SAMPLES.items() if n < need]
    note = (f"too few samples ({n}): " + ", ".join(f"p{p} needs >= {MIN_SAMPLES[p]} samples" for p in short)
            if short else "")
    return short, note


def latency_percentiles(lat_ms: np.ndarray) -> tuple[dict[int, float], str]:
    """p50/p90/p99 where the sample count allows stating them; the note says what was withheld."""
    short, note = withheld(len(lat_ms))
    return {p: math.nan if p in short else float(np.percentile(lat_ms, p)) for p in MIN_SAMPLES}, note


#: The longest a server sleeps between looks at the stop flag.
STOP_CHECK_S = 0.1


def sleep_until(clock: Callable[[], int], check_stop: Callable[[], None] = lambda: None) -> Callable[[int], None]:
    """A wait for the next arrival that looks at the stop flag every STOP_CHECK_S."""
    def wait(t_ns: int) -> None:
        delay = (t_ns - clock()) / 1e9
        if delay > 0:
            sleep_unless(check_stop, delay, STOP_CHECK_S)  # check_stop raises Interrupted on a stop
    return wait


@dataclass
class ServerRun:
    rate_sps: float
    latency_ms: np.ndarray  # per request, arrival to completion
    batch_sizes: list[int]
    phases_ns: list[list[int]] = field(default_factory=list)  # per batch, as the Runner times them
    duration_s: float = 0.0
    steps_ns: list[list[int]] | None = None  # generation, per batch: its prefill's ns, then each decode step's

    @property
    def ttft_ms(self) -> np.ndarray:
        """Per request, generation: arrival to its first token (the end of its batch's prefill)."""
        after_first = [p[PHASES.index("forward")] - s[0] + p[PHASES.index("postprocess")]
                       for p, s in zip(self.phases_ns, self.steps_ns)]
        return self.latency_ms - np.repeat(np.asarray(after_first, dtype=np.float64) / 1e6, self.batch_sizes)

    @property
    def tpot_ms(self) -> np.ndarray:
        """Per request, generation: its batch's mean decode step (NaN with one new token)."""
        tpot = [np.mean(s[1:]) / 1e6 if len(s) > 1 else math.nan for s in self.steps_ns]
        return np.repeat(np.asarray(tpot, dtype=np.float64), self.batch_sizes)

    def good(self, slo: "Slo") -> np.ndarray:
        """Per request: did it meet every bound of `slo` (one new token has no TPOT to miss)?"""
        ok = np.ones(len(self.latency_ms), dtype=bool)
        if slo.latency_ms is not None:
            ok &= self.latency_ms <= slo.latency_ms
        if slo.ttft_ms is not None:
            ok &= self.ttft_ms <= slo.ttft_ms
        if slo.tpot_ms is not None:
            ok &= ~(self.tpot_ms > slo.tpot_ms)
        return ok

    @property
    def achieved_rate_sps(self) -> float:
        return len(self.latency_ms) / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def forward_rate_sps(self) -> float:
        """Samples per second of forward time over the batches actually run."""
        forward_ns = sum(p[PHASES.index("forward")] for p in self.phases_ns)
        return sum(self.batch_sizes) / (forward_ns / 1e9) if forward_ns > 0 else math.nan

    @property
    def p99_ms(self) -> float:
        return latency_percentiles(self.latency_ms)[0][99]

    @property
    def judged_by(self) -> int:
        """The highest percentile its requests can state: 99, else 90, else 50 (MIN_SAMPLES)."""
        return next(p for p in (99, 90, 50) if len(self.latency_ms) >= MIN_SAMPLES[p])

    @property
    def judged_ms(self) -> float:
        """That percentile's latency: what a rate is held to the SLO by."""
        return latency_percentiles(self.latency_ms)[0][self.judged_by] if len(self.latency_ms) else math.nan


def serve(run_batch: Callable[[int, int], list[int]], rate_sps: float, batch_size: int, n_requests: int,
          seed: int, clock: Callable[[], int] = time.perf_counter_ns,
          wait: Callable[[int], None] | None = None, max_s: float = math.inf) -> ServerRun:
    """Feed `n_requests` Poisson arrivals to `run_batch(i, k)` (batch number, size -> phase ns); only
    those arriving within `max_s` seconds are offered (at least one), so a run at a low rate ends."""
    wait = wait or sleep_until(clock)
    rng = np.random.default_rng(seed)
    t0 = clock()
    offsets = np.cumsum(rng.exponential(1e9 / rate_sps, n_requests))
    n_requests = max(1, int(np.searchsorted(offsets, max_s * 1e9, side="right")))
    arrivals = t0 + offsets[:n_requests].astype(np.int64)
    latency = np.empty(n_requests, dtype=np.float64)
    sizes, phases, done, i = [], [], 0, 0
    while done < n_requests:
        if arrivals[done] > clock():
            wait(int(arrivals[done]))  # idle until the next request arrives
        arrived = int(np.searchsorted(arrivals, clock(), side="right"))
        k = max(1, min(batch_size, arrived - done))
        phases.append(run_batch(i, k))
        end = clock()
        latency[done:done + k] = (end - arrivals[done:done + k]) / 1e6
        sizes.append(k)
        done, i = done + k, i + 1
    return ServerRun(rate_sps, latency, sizes, phases, (clock() - t0) / 1e9)


@dataclass(frozen=True)
class Slo:
    """What a server rate is held to, each at the highest percentile its requests can state
    (`ServerRun.judged_by`): the request latency, or for generation the time to first token and the time
    per output token (a bound not set is met; a run of one new token has no TPOT to miss)."""

    latency_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met(self, run: ServerRun) -> bool:
        if not len(run.latency_ms):
            return False
        q = run.judged_by
        if self.latency_ms is not None and not run.judged_ms <= self.latency_ms:
            return False
        if self.ttft_ms is not None and not np.percentile(run.ttft_ms, q) <= self.ttft_ms:
            return False
        if self.tpot_ms is not None and not np.isnan(tpot := run.tpot_ms).all():
            return bool(np.nanpercentile(tpot, q) <= self.tpot_ms)
        return True

    def __str__(self) -> str:
        bounds = [f"{name} <= {v:g} ms" for name, v in
                  (("latency", self.latency_ms), ("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms)) if v is not None]
        return " and ".join(bounds) or "no bound"


def search_rate(measure: Callable[[float], ServerRun], slo: Slo, start_sps: float,
                steps: int, capacity_sps: float = math.inf) -> tuple[ServerRun | None, list[ServerRun]]:
    """The highest rate that meets `slo`: double (or halve) from `start_sps` until the bound is
    bracketed, then bisect geometrically, never above `capacity_sps`. Each rate is held to the highest
    percentile its requests can state (p99, else p90, else p50: `ServerRun.judged_by`), so a slow model,
    whose low rates bring few requests, can still pass. Returns the best passing run (None if none) and
    all runs."""
    runs: list[ServerRun] = []
    lo = hi = None
    rate = start_sps
    for _ in range(steps):
        run = measure(rate)
        runs.append(run)
        if slo.met(run):
            lo = run if lo is None or run.rate_sps > lo.rate_sps else lo
        else:
            hi = run if hi is None or run.rate_sps < hi.rate_sps else hi
        if lo is None:
            rate = hi.rate_sps / 2
        elif hi is None:
            rate = lo.rate_sps * 2
        else:
            rate = math.sqrt(lo.rate_sps * hi.rate_sps)
        if rate > capacity_sps and lo is not None and lo.rate_sps >= capacity_sps:
            break  # already passing at capacity: nothing higher is sustainable
        rate = min(rate, capacity_sps)
    return lo, runs


def confirm(measure_steady: Callable[[float], ServerRun], slo: Slo, best: ServerRun,
            tries: int = 3, step_down: float = 0.8) -> tuple[ServerRun, bool]:
    """A steady run at the rate the search found; where it misses the SLO, again at a lower rate (up to
    `tries` runs). Returns the last steady run and whether it met the SLO."""
    rate = best.rate_sps
    for _ in range(tries):
        run = measure_steady(rate)
        if slo.met(run):
            return run, True
        rate *= step_down
    return run, False


def run_scenario(task, workload: Workload, runner: Runner, server_cfg, seed: int, before_measure=None):
    """Measure `workload` as `task.scenario` says with `runner` (its rules, timer, meter and stop check).

    Returns (Measurement, extra row columns).
    """
    if task.scenario == "single-stream":  # ask for enough samples to state a p99
        m = runner.adjusted(min_iters=max(runner.m.min_iters, MIN_SAMPLES[99])).run(workload, before_measure)
        short, note = withheld(m.n_iters)  # summarize() states the rest from the same samples
        return m, {**{f"e2e_p{p}_ms": math.nan for p in short}, "percentile_note": note}
    if task.scenario != "server":
        return runner.run(workload, before_measure), {}
    return _server(task, workload, runner, server_cfg, seed, before_measure)


def _server(task, workload: Workload, runner: Runner, server_cfg, seed: int, before_measure):
    """Warm up and learn the batch service time, then offer Poisson load inside the energy window."""
    measure = runner.m
    warm = runner.adjusted(metered=False, min_time_s=0.0, min_iters=5,  # the window is the load, not this
                           max_time_s=max(1.0, measure.min_time_s / 4)).run(workload, before_measure)
    service_s = float(np.median(sum(warm.raw_ns.values()))) / 1e9
    capacity_sps = task.batch_size / service_s

    generation = task.workload == "generate"  # a GenerateWorkload: it times each step apart, in .steps

    def run_batch(i: int, k: int) -> list[int]:
        runner.check_stop()
        workload.set_batch(k)
        return runner.iteration(workload, i)

    def at(rate: float, max_s: float = measure.max_time_s, least: int = 0) -> ServerRun:
        n = int(max(least, min(server_cfg.min_requests, max(MIN_SAMPLES[90], rate * max_s))))
        run = serve(run_batch, rate, task.batch_size, n, seed, clock=runner.clock,
                    wait=sleep_until(runner.clock, runner.check_stop), max_s=max_s)
        if generation:  # the workload timed one entry of steps per batch, the last ones are this run's
            run.steps_ns = workload.steps[-len(run.batch_sizes):]
        return run

    def steady(rate: float) -> ServerRun:  # every request that arrives within min_s
        return at(rate, server_cfg.min_s, math.ceil(rate * server_cfg.min_s))

    token_slos = server_cfg.ttft_slo_ms is not None or server_cfg.tpot_slo_ms is not None
    slo = (Slo(ttft_ms=server_cfg.ttft_slo_ms, tpot_ms=server_cfg.tpot_slo_ms) if generation and token_slos
           else Slo(latency_ms=server_cfg.latency_slo_ms))
    confirmed = None
    with energy_window(runner.meter) as window:
        if task.rate_sps:
            best = shown = at(task.rate_sps)
            runs = [best]
        else:
            best, runs = search_rate(at, slo, 0.5 * capacity_sps, server_cfg.search_steps, capacity_sps)
            shown = best or min(runs, key=lambda r: r.rate_sps)
            if best is not None and server_cfg.min_s > 0:
                shown, confirmed = confirm(steady, slo, best)
                runs.append(shown)
                best = shown if confirmed else None
    arr = np.asarray(shown.phases_ns, dtype=np.int64).reshape(-1, 4)
    raw = {p: arr[:, j].copy() for j, p in enumerate(PHASES)}
    m = Measurement(raw, warm.cold_ns, warm.warmup_iters, shown.duration_s, best is not None, window.reading,
                    energy_samples=sum(len(r.latency_ms) for r in runs),  # the meter saw every rate tried
                    steps_ns=shown.steps_ns)
    extra = _server_columns(task, slo, best, shown, runs, capacity_sps, confirmed)
    if generation:
        extra.update(_token_columns(shown, slo, task.seq_len))
    return m, extra


def _token_columns(run: ServerRun, slo: Slo, seq_len: int) -> dict:
    """A generation server's per-request token figures (queueing included) and the SLOs it was held to."""
    ttft, _ = latency_percentiles(run.ttft_ms)
    ttft_lo, ttft_hi = median_ci(run.ttft_ms)
    new_tokens = len(run.steps_ns[0])
    prefill_s = sum(s[0] for s in run.steps_ns) / 1e9
    return {
        "ttft_p50_ms": ttft[50], "ttft_p99_ms": ttft[99], "ttft_ci_low_ms": ttft_lo, "ttft_ci_high_ms": ttft_hi,
        "output_tokens_per_s": run.achieved_rate_sps * new_tokens,  # what the server delivered: no CI
        "output_tokens_ci_low_per_s": math.nan, "output_tokens_ci_high_per_s": math.nan,
        "prefill_tokens_per_s": sum(run.batch_sizes) * seq_len / prefill_s if prefill_s > 0 else math.nan,
        "server_ttft_slo_ms": math.nan if slo.ttft_ms is None else slo.ttft_ms,
        "server_tpot_slo_ms": math.nan if slo.tpot_ms is None else slo.tpot_ms,
    }


def _server_columns(task, slo: Slo, best: ServerRun | None, shown: ServerRun, runs: list[ServerRun],
                    capacity_sps: float, confirmed: bool | None) -> dict:
    """The server's row columns: the rate shown, its latencies, and the search that found it."""
    pct, note = latency_percentiles(shown.latency_ms)
    good = shown.good(slo)
    extra = {
        "server_rate_sps": shown.rate_sps, "server_achieved_sps": shown.achieved_rate_sps,
        "server_requests": len(shown.latency_ms), "server_mean_ms": float(shown.latency_ms.mean()),
        "server_p50_ms": pct[50], "server_p90_ms": pct[90], "server_p99_ms": pct[99],
        "server_slo_ms": math.nan if slo.latency_ms is None else slo.latency_ms,
        "server_search": json.dumps([[round(r.rate_sps, 3), f"p{r.judged_by}", round(r.judged_ms, 3), slo.met(r)]
                                     for r in runs]),
        "server_judged_by": f"p{shown.judged_by}", "server_capacity_sps": capacity_sps,
        "server_steady_s": shown.duration_s if confirmed is not None else math.nan,
        "server_mean_batch": float(np.mean(shown.batch_sizes)), "percentile_note": note,
        # goodput: the requests per second that met every bound of the SLO (DistServe, vLLM's bench)
        "server_goodput_sps": float(good.sum()) / shown.duration_s if shown.duration_s > 0 else math.nan,
        "server_good_fraction": float(good.mean()) if len(good) else math.nan,
        # judged by what the server delivered: requests per second and per-request latency, and the
        # forward rate of the batches it really ran (partly filled ones included)
        "throughput_sps": shown.achieved_rate_sps, "throughput_mean_sps": shown.achieved_rate_sps,
        "throughput_ci_low_sps": math.nan, "throughput_ci_high_sps": math.nan,
        "latency_p99_ms": pct[99], "forward_throughput_sps": shown.forward_rate_sps,
    }
    if confirmed is False:
        extra["percentile_note"] = (f"the search's rate missed p{shown.judged_by} {slo} in a steady "
                                    f"{shown.duration_s:.0f}-s run, also at lower rates; showing the last. {note}").strip()
    elif not task.rate_sps and best is None:
        extra["percentile_note"] = (f"no rate met its percentile {slo}; showing the lowest rate "
                                    f"tried. {note}").strip()
    return extra
