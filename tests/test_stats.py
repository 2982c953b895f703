"""The one order-statistics CI gives exactly what median_ci and rawstats' p99 CI gave before it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpibench.analysis import rawstats
from mpibench.stats import Z95, median_ci, quantile_ci

SIZES = (3, 6, 10, 101, 1000)
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.9, 0.99)


def reference_median_ci(x: np.ndarray, conf_z: float = Z95) -> tuple[float, float]:
    """stats.median_ci as it was written before quantile_ci existed."""
    n = len(x)
    if n < 6:
        return (-math.inf, math.inf)
    s = np.sort(x)
    half = conf_z * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return float(s[lo - 1]), float(s[hi - 1])


def reference_quantile_ci(sorted_x: np.ndarray, q: float, z: float = Z95) -> tuple[float, float]:
    """rawstats.quantile_ci as it was written before it moved to stats."""
    n = len(sorted_x)
    if n == 0:
        return (math.nan, math.nan)
    half = z * math.sqrt(n * q * (1 - q))
    lo = math.floor(n * q - half)
    hi = math.ceil(1 + n * q + half)
    return (float(sorted_x[lo - 1]) if lo >= 1 else -math.inf,
            float(sorted_x[hi - 1]) if hi <= n else math.inf)


def samples(n: int) -> list[np.ndarray]:
    """Seeded samples of size n: continuous, heavy-tailed and with ties."""
    rng = np.random.default_rng(n)
    return [rng.exponential(size=n), rng.lognormal(sigma=1.5, size=n), rng.integers(0, 5, size=n) * 1.0]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("conf_z", (Z95, 1.0, 2.576))
def test_median_ci_matches_the_old_formula(n: int, conf_z: float) -> None:
    for x in samples(n):
        assert median_ci(x, conf_z) == reference_median_ci(x, conf_z)
        assert median_ci(x) == reference_median_ci(x)


@pytest.mark.parametrize("n", (0,) + SIZES)
@pytest.mark.parametrize("q", QUANTILES)
def test_quantile_ci_matches_the_old_rawstats_formula(n: int, q: float) -> None:
    for x in samples(n) if n else [np.array([])]:
        s = np.sort(x)
        want = reference_quantile_ci(s, q)
        got = quantile_ci(s, q)
        assert rawstats.quantile_ci(s, q) == got
        if n == 0:
            assert all(math.isnan(v) for v in got) and all(math.isnan(v) for v in want)
        else:
            assert got == want
            assert quantile_ci(s, q, 1.0) == reference_quantile_ci(s, q, 1.0)


def test_unknown_bounds_are_infinite_unless_clipped() -> None:
    s = np.arange(1.0, 101.0)
    assert quantile_ci(s, 0.99) == (97.0, math.inf)  # a p99 bound needs ~700 samples
    assert quantile_ci(s, 0.99, clip=True) == (97.0, 100.0)
