"""Statistics from raw per-iteration times, in one place: percentiles, order-statistics CIs, summaries.

numpy only (the analysis side uses this too, on a laptop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PHASES = ("preprocess", "h2d", "forward", "postprocess")
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: two-sided 95 %


def quantile_ci(sorted_x: np.ndarray, q: float, z: float = Z95, *, clip: bool = False) -> tuple[float, float]:
    """Distribution-free CI of the q-quantile from order statistics (binomial, normal approximation).

    With n sorted samples the interval is [x_(l), x_(u)], l = floor(n*q - z*sqrt(n*q*(1-q))),
    u = ceil(1 + n*q + z*sqrt(n*q*(1-q))) (1-based). A bound whose rank falls outside the sample is
    unknown and given as -inf/inf (a p99 needs roughly 700 samples before its upper bound exists), or
    with ``clip`` the rank is moved to the nearest sample. No samples give (nan, nan).
    """
    n = len(sorted_x)
    if n == 0:
        return (math.nan, math.nan)
    half = z * math.sqrt(n * q * (1 - q))
    lo = math.floor(n * q - half)
    hi = math.ceil(1 + n * q + half)
    if clip:
        lo, hi = max(1, lo), min(n, hi)
    return (float(sorted_x[lo - 1]) if lo >= 1 else -math.inf,
            float(sorted_x[hi - 1]) if hi <= n else math.inf)


def median_ci(x: np.ndarray, conf_z: float = Z95) -> tuple[float, float]:
    """The median's quantile_ci, ranks clipped to the sample; too few samples give (-inf, inf)."""
    if len(x) < 6:  # with n <= 5 even [min, max] covers the median with < 95 % probability
        return (-math.inf, math.inf)
    return quantile_ci(np.sort(x), 0.5, conf_z, clip=True)


#: Student's t, 97.5th percentile, for 1..30 degrees of freedom (two-sided 95 %); beyond 30, Z95 is within 4 %.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom."""
    return T975[df - 1] if df <= len(T975) else Z95


def mean_ci(x) -> tuple[float, float]:
    """(mean, half-width of its 95 % CI by Student's t); one value has an unbounded CI, none is NaN."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), math.inf)
    return (float(x.mean()), t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)))


def combine_windows(medians, lows, highs) -> tuple[float, float, float]:
    """One median latency and its 95 % CI from k windows of the same configuration (--repeats).

    Each window gives a median m_i and the order-statistics CI of `median_ci`, from which its standard
    error is read back (se_i = CI width / 2 Z95). The medians scatter by the noise within a window plus
    the drift between windows (a random-effects model), so their sample variance s^2 estimates both; it
    is not allowed below the mean within-window variance, which k small can undershoot. The centre is the
    mean of the medians; the CI is centre +- t(k-1) sqrt(max(s^2, mean se_i^2) / k), never below 0. One window gives its
    own median and CI; no finite median gives NaNs.
    """
    m = np.asarray(medians, dtype=float)
    lo, hi = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    keep = np.isfinite(m)
    m, lo, hi = m[keep], lo[keep], hi[keep]
    if len(m) == 0:
        return (math.nan, math.nan, math.nan)
    if len(m) == 1:
        return (float(m[0]), float(lo[0]), float(hi[0]))
    k = len(m)
    within = float(np.mean(((hi - lo) / (2 * Z95)) ** 2))  # inf where a window's CI is unbounded
    half = t975(k - 1) * math.sqrt(max(float(np.var(m, ddof=1)), within) / k)
    centre = float(np.mean(m))
    return (centre, max(0.0, centre - half), centre + half)  # latencies and rates are never negative


def ci_relative_halfwidth(x: np.ndarray) -> float:
    """Half the CI's width over the median: the stopping rule compares this with target_ci."""
    lo, hi = median_ci(x)
    med = float(np.median(x)) if len(x) else math.nan
    if not math.isfinite(lo) or med <= 0:
        return math.inf
    return (hi - lo) / 2 / med


@dataclass(frozen=True)
class Summary:
    """Summary of one series in milliseconds."""

    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    n: int

    @classmethod
    def of_ns(cls, ns: np.ndarray) -> "Summary":
        if len(ns) == 0:
            nan = math.nan
            return cls(nan, nan, nan, nan, nan, nan, nan, 0)
        ms = np.asarray(ns, dtype=np.float64) / 1e6
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(ms.mean()), float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                   float(p50), float(p90), float(p99), float(ms.min()), float(ms.max()), len(ms))


def summarize(raw_ns: dict[str, np.ndarray], batch_size: int, measure_s: float = math.nan) -> dict[str, float]:
    """The /tasks statistics columns from raw per-phase nanoseconds (and the window they were measured in)."""
    e2e = sum(np.asarray(raw_ns[p], dtype=np.int64) for p in PHASES)
    s = Summary.of_ns(e2e)
    lo, hi = median_ci(e2e / 1e6) if len(e2e) else (math.nan, math.nan)
    row = {
        "n_iters": s.n,
        "e2e_mean_ms": s.mean_ms, "e2e_std_ms": s.std_ms,
        "e2e_p50_ms": s.p50_ms, "e2e_p90_ms": s.p90_ms, "e2e_p99_ms": s.p99_ms,
        "e2e_min_ms": s.min_ms, "e2e_max_ms": s.max_ms,
        "e2e_ci_low_ms": lo, "e2e_ci_high_ms": hi,
        # one definition of throughput: from the median latency, with the CI the median's CI implies
        "throughput_sps": _per_second(batch_size, s.p50_ms),
        "throughput_ci_low_sps": _per_second(batch_size, hi),
        "throughput_ci_high_sps": _per_second(batch_size, lo),
        "throughput_mean_sps": _per_second(batch_size, s.mean_ms),
        "latency_p99_ms": s.p99_ms,
        "window_coverage": float(e2e.sum()) / 1e9 / measure_s if measure_s > 0 else math.nan,
    }
    for p in PHASES:
        ps = Summary.of_ns(raw_ns[p])
        row[f"{p}_mean_ms"] = ps.mean_ms
        row[f"{p}_p50_ms"] = ps.p50_ms
        row[f"{p}_p99_ms"] = ps.p99_ms
    row["forward_throughput_sps"] = _per_second(batch_size, row["forward_p50_ms"])
    return row


def _per_second(batch_size: int, ms: float) -> float:
    """batch_size over a latency in ms; NaN where the latency is unknown, infinite where it is 0."""
    if math.isnan(ms):
        return math.nan
    return batch_size / (ms / 1e3) if ms > 0 else math.inf
