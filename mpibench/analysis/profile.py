"""The batch profile: per-sample latency against batch size, and the batch sizes that break the trend.

The prototype's "batch anomaly" (one batch size much cheaper per sample than its neighbours) becomes a
test. Per series (model, device, precision, seq_len, threads), with per-sample latency = median
end-to-end latency / batch size and its 95 % CI = the median's CI / batch size:

- against the previous batch size: the change, significant when the two CIs do not overlap;
- against the trend: an interior batch size is compared with the straight line (in log-log space)
  through its two neighbours; the band is the same interpolation of the neighbours' CI bounds, which is
  wider than the interpolated value's own CI, so the test is conservative. A batch size is an anomaly
  when its whole CI lies outside the band and it departs by at least MIN_EFFECT_PCT. The smallest and
  largest batch sizes have one neighbour and are not tested. The worst departure is flagged first and
  the others are tested again against neighbours that are not anomalies themselves.

Why MIN_EFFECT_PCT is 10 %: a perfectly smooth curve (a fixed overhead plus a cost per sample) is
not straight in log-log space; between batch sizes that double, its chord can be up to ~6 % off. Smaller
departures are curvature, not anomalies.
"""

from __future__ import annotations

import math

import numpy as np

from mpibench.analysis.table import KEY, col, config_of, group_rows, label, n_rows, per_configuration, present

#: A batch-size series: every dimension but the batch size (of the optional ones, those a table has).
SERIES = tuple(k for k in KEY if k != "batch_size")
#: A departure smaller than this is not called an anomaly, however tight the CIs (see above).
MIN_EFFECT_PCT = 10.0

COLUMNS = ("per_sample_ms", "per_sample_ci_low_ms", "per_sample_ci_high_ms", "vs_prev_pct",
           "vs_prev_significant", "trend_ms", "departure_pct", "anomaly")


def batch_profile(t: dict[str, np.ndarray], rows=None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """COLUMNS for every row (NaN/"" where not computed) and the anomalies found, one dict each.

    `rows`: one row per configuration, `t` stating their figures (default: table.per_configuration(t)).
    """
    if rows is None:
        t, rows = per_configuration(t)
    rows = np.asarray(rows)
    n = n_rows(t)
    out = {c: np.full(n, math.nan) for c in COLUMNS}
    out["vs_prev_significant"] = np.zeros(n, dtype=bool)
    out["anomaly"] = np.full(n, "", dtype=object)
    out["trend_left"] = np.full(n, -1)
    out["trend_right"] = np.full(n, -1)
    bs = col(t, "batch_size").astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["per_sample_ms"] = col(t, "e2e_p50_ms").astype(float) / bs
        out["per_sample_ci_low_ms"] = col(t, "e2e_ci_low_ms").astype(float) / bs
        out["per_sample_ci_high_ms"] = col(t, "e2e_ci_high_ms").astype(float) / bs
    rows = rows[(col(t, "status", "ok")[rows] == "ok") & np.isfinite(out["per_sample_ms"][rows])]
    findings = []
    for idx in group_rows(t, present(t, SERIES), rows).values():
        _compare_neighbours(out, idx)
        findings += [_finding(t, out, i) for i in _anomalies(out, bs, list(idx))]
    return out, findings


def _compare_neighbours(out: dict, idx: np.ndarray) -> None:
    ps, lo, hi = (out[c] for c in ("per_sample_ms", "per_sample_ci_low_ms", "per_sample_ci_high_ms"))
    for a, b in zip(idx[:-1], idx[1:]):
        out["vs_prev_pct"][b] = (ps[b] / ps[a] - 1) * 100
        out["vs_prev_significant"][b] = bool(hi[b] < lo[a] or lo[b] > hi[a])


def _anomalies(out: dict, bs: np.ndarray, series: list[int]) -> list[int]:
    """Flag the worst departure first, then test the rest against neighbours that are not anomalies.

    One anomaly would otherwise drag the trend of both its neighbours and get them flagged too.
    """
    flagged: list[int] = []
    while True:
        clean = [i for i in series if i not in flagged]
        worst, worst_dep = None, 0.0
        for k in range(1, len(clean) - 1):
            kind, dep = _trend_test(out, bs, clean[k - 1], clean[k], clean[k + 1])
            if kind and abs(dep) > worst_dep:
                worst, worst_dep = clean[k], abs(dep)
        if worst is None:
            break
        flagged.append(worst)
    clean = [i for i in series if i not in flagged]
    found = []
    for i in sorted(flagged, key=series.index):
        left = [j for j in clean if bs[j] < bs[i]]
        right = [j for j in clean if bs[j] > bs[i]]
        if left and right:
            kind, _ = _trend_test(out, bs, left[-1], i, right[0])
            out["anomaly"][i] = kind
            if kind:
                found.append(i)
    return found


def _trend_test(out: dict, bs: np.ndarray, j: int, i: int, m: int) -> tuple[str, float]:
    """Row i against the log-log line through rows j and m: ("faster"|"slower"|"", departure %).

    Fills row i's trend columns as a side effect.
    """
    w = (math.log(bs[i]) - math.log(bs[j])) / (math.log(bs[m]) - math.log(bs[j]))

    def between(name: str) -> float:
        a, c = out[name][j], out[name][m]
        if not (a > 0 and c > 0 and math.isfinite(a) and math.isfinite(c)):
            return math.nan
        return math.exp((1 - w) * math.log(a) + w * math.log(c))

    trend = between("per_sample_ms")
    band_lo, band_hi = between("per_sample_ci_low_ms"), between("per_sample_ci_high_ms")
    out["trend_ms"][i] = trend
    out["trend_left"][i], out["trend_right"][i] = j, m
    if not (math.isfinite(band_lo) and math.isfinite(band_hi)):
        return "", math.nan
    departure = (out["per_sample_ms"][i] / trend - 1) * 100
    out["departure_pct"][i] = departure
    if out["per_sample_ci_high_ms"][i] < band_lo and departure <= -MIN_EFFECT_PCT:
        return "faster", departure
    if out["per_sample_ci_low_ms"][i] > band_hi and departure >= MIN_EFFECT_PCT:
        return "slower", departure
    return "", departure


def _finding(t: dict, out: dict, i: int) -> dict:
    j, m = out["trend_left"][i], out["trend_right"][i]
    cfg = config_of(t, i)
    d = out["departure_pct"][i]
    return {**cfg, "kind": out["anomaly"][i], "departure_pct": float(d),
            "per_sample_ms": float(out["per_sample_ms"][i]), "trend_ms": float(out["trend_ms"][i]),
            "neighbours": [int(t["batch_size"][j]), int(t["batch_size"][m])],
            "text": (f"{label(cfg, ('batch_size', 'model'))}: batch size {cfg['batch_size']} is "
                     f"{abs(d):.0f} % {'faster' if d < 0 else 'slower'} per sample than the trend "
                     f"through batch sizes {int(t['batch_size'][j])} and {int(t['batch_size'][m])} "
                     f"({out['per_sample_ms'][i]:.3g} vs {out['trend_ms'][i]:.3g} ms/sample; "
                     "95 % CIs apart)")}
