"""Per-task statistics recomputed from /raw, streamed in blocks so a file of any size fits in memory.

What the raw samples add to the /tasks table: a 95 % CI of the p99 (the table has only its point value)
and a drift check (did the median move between the first and second half of the measurement, e.g. a
warm-up that had not finished or a clock that throttled?).
"""

from __future__ import annotations

import math

import h5py
import numpy as np

from mpibench.stats import PHASES, median_ci, quantile_ci

#: Rows of /raw read at once (times four phases, 8 bytes each: 32 MiB).
BLOCK_ROWS = 1 << 20
#: A drift smaller than this is not reported, however significant: it would not change a decision.
DRIFT_MIN_PCT = 5.0

COLUMNS = ("raw_n", "raw_p50_ms", "raw_p99_ms", "p99_ci_low_ms", "p99_ci_high_ms", "drift_pct",
           "drift_significant")


def percentile_sorted(sorted_x: np.ndarray, q: float) -> float:
    """np.percentile's linear interpolation on an already sorted array (no second sort)."""
    pos = q * (len(sorted_x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_x) - 1)
    return float(sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo))


def one_task(e2e_ms: np.ndarray) -> dict[str, float]:
    """The raw-derived statistics of one task's end-to-end latencies (in arrival order)."""
    n = len(e2e_ms)
    if n == 0:
        return {c: math.nan for c in COLUMNS} | {"raw_n": 0, "drift_significant": False}
    s = np.sort(e2e_ms)
    p99_lo, p99_hi = quantile_ci(s, 0.99)
    first, second = e2e_ms[: n // 2], e2e_ms[n // 2:]
    m1, m2 = float(np.median(first)) if len(first) else math.nan, float(np.median(second))
    (lo1, hi1), (lo2, hi2) = median_ci(first), median_ci(second)
    drift = (m2 / m1 - 1) * 100 if m1 > 0 else math.nan
    apart = hi1 < lo2 or hi2 < lo1
    return {"raw_n": n, "raw_p50_ms": percentile_sorted(s, 0.5), "raw_p99_ms": percentile_sorted(s, 0.99),
            "p99_ci_low_ms": p99_lo, "p99_ci_high_ms": p99_hi, "drift_pct": drift,
            "drift_significant": bool(apart and abs(drift) >= DRIFT_MIN_PCT)}


def _blocks(offsets: np.ndarray, counts: np.ndarray, block_rows: int):
    """Consecutive runs of tasks (by raw offset) whose rows together stay near block_rows."""
    order = np.argsort(offsets, kind="stable")
    start = 0
    while start < len(order):
        stop, rows = start, 0
        while stop < len(order) and (stop == start or rows + counts[order[stop]] <= block_rows):
            rows += counts[order[stop]]
            stop += 1
        yield order[start:stop]
        start = stop


def stream(f: h5py.File, offsets: np.ndarray, counts: np.ndarray,
           block_rows: int = BLOCK_ROWS) -> dict[str, np.ndarray]:
    """COLUMNS for every task, reading /raw one block of whole tasks at a time.

    Rows a killed writer never wrote (beyond the end of /raw) count as missing, not as zeros.
    """
    n = len(offsets)
    out = {c: np.full(n, math.nan) for c in COLUMNS}
    out["raw_n"] = np.zeros(n, dtype=np.int64)
    out["drift_significant"] = np.zeros(n, dtype=bool)
    datasets = [f[f"raw/{p}_ns"] for p in PHASES]
    available = min(ds.shape[0] for ds in datasets)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.clip(np.minimum(np.asarray(counts, dtype=np.int64), available - offsets), 0, None)
    for block in _blocks(offsets, counts, block_rows):
        block = block[counts[block] > 0]
        if len(block) == 0:
            continue
        lo, hi = int(offsets[block].min()), int((offsets[block] + counts[block]).max())
        e2e = datasets[0][lo:hi]
        for ds in datasets[1:]:
            e2e += ds[lo:hi]
        for i in block.tolist():
            a = int(offsets[i]) - lo
            stats = one_task(e2e[a:a + int(counts[i])] / 1e6)
            for c in COLUMNS:
                out[c][i] = stats[c]
    return out
