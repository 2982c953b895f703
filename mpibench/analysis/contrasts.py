"""How precisions, backends and attention kernels compare: each configuration against its baseline twin.

A contrast pairs a usable row (status ok, a throughput measured) of a non-baseline value (bf16, compile,
...) with the usable row that differs from it in that dimension only, set to the baseline (fp32, eager,
sdpa). Ratios are value / baseline; the two throughput 95 % CIs are apart when they do not overlap, as in
--compare. A value that was unavailable on a device in every row is a finding of its own.
"""

from __future__ import annotations

import math

import numpy as np

from mpibench.analysis import document as D
from mpibench.analysis.table import (col, config_of, constant_columns, group_rows, in_every_window, label, latency_p99,
                                     latest_per_config, throughput_ci)
from mpibench.task import DEFAULTS, with_role

#: The compared dimensions and the value each is measured against: fp32, and every variant's default.
BASELINES = {"precision": "fp32", **{d: DEFAULTS[d] for d in with_role("variant") if d in DEFAULTS}}


def contrasts(t: dict[str, np.ndarray], rows, windowed: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One dict per usable row whose baseline twin is usable too, by dimension, value, device, batch size.

    With `windowed` (every measurement window's rows, --repeats), "CIs apart" must hold, the same way
    round, in every window alone as well as in the combined figures of `t`.
    """
    thr, low, high = throughput_ci(t)
    rows = np.asarray(rows, dtype=int)
    ok = rows[(col(t, "status", "ok")[rows] == "ok") & (thr[rows] > 0)]
    configs = {int(i): config_of(t, i) for i in ok}
    by_config = {tuple(cfg.values()): i for i, cfg in configs.items()}
    p99 = latency_p99(t)
    out = []
    for dim, base in BASELINES.items():
        if dim not in t or len({configs[i][dim] for i in configs}) < 2:
            continue
        for (value, _), idx in group_rows(t, (dim, "device"), ok).items():
            if value == base:
                continue
            for i in idx.tolist():
                j = by_config.get(tuple({**configs[i], dim: base}.values()))
                if j is None:
                    continue
                out.append({"dimension": dim, "value": value, "baseline": base, "config": configs[i],
                            "row": i, "baseline_row": j, "throughput_ratio": _ratio(thr[i], thr[j]),
                            "cis_apart": bool(high[i] < low[j] or high[j] < low[i]),
                            "p99_ratio": _ratio(p99[i], p99[j])})
    if windowed is not None:
        held = in_every_window(windowed, [c for c in out if c["cis_apart"]],
                               lambda w: [c for c in contrasts(w, latest_per_config(w)) if c["cis_apart"]], _verdict)
        for c in out:
            c["cis_apart"] = c in held
    return out


def _verdict(c: dict) -> tuple:
    return c["dimension"], c["value"], tuple(c["config"].items()), c["throughput_ratio"] > 1


def unavailable(t: dict[str, np.ndarray], rows) -> list[dict]:
    """Each non-baseline value that was unavailable in every row of a device, with the first row's message."""
    status = col(t, "status", "ok").astype(str)
    out = []
    for dim, base in BASELINES.items():
        if dim not in t:
            continue
        for (value, device), idx in group_rows(t, (dim, "device"), rows).items():
            if value != base and (status[idx] == "unavailable").all():
                out.append({"dimension": dim, "value": value, "baseline": base, "device": device,
                            "message": str(col(t, "message", "")[idx[0]])})
    return out


def summary(group: list[dict]) -> str:
    """One line per (dimension, value, device): `bf16 vs fp32 on cpu: 0.52×–0.61× throughput over batch sizes
    1–16 (slower at every batch size; 95 % CIs apart at 4 of 4)`."""
    first = group[0]
    low, high = (_times(f(c["throughput_ratio"] for c in group)) for f in (min, max))
    sizes = sorted({c["config"]["batch_size"] for c in group})
    faster = sorted({c["config"]["batch_size"] for c in group if c["throughput_ratio"] > 1})
    slower = sorted({c["config"]["batch_size"] for c in group if c["throughput_ratio"] <= 1})
    span = low if low == high else f"{low}–{high}"
    over = f"batch size {sizes[0]}" if len(sizes) == 1 else f"batch sizes {sizes[0]}–{sizes[-1]}"
    if len(group) > len(sizes):
        over = f"{len(group)} configurations, {over}"
    if not slower or not faster:
        how = ("faster" if faster else "slower") + (" at every batch size" if len(group) > 1 else "")
    else:
        how = f"faster at batch size{'s' * (len(faster) > 1)} {_and(faster)}, slower at {_and(slower)}"
    apart = sum(c["cis_apart"] for c in group)
    ci = (("95 % CIs apart" if apart else "95 % CIs overlap") if len(group) == 1 else
          f"95 % CIs apart at {apart} of {len(group)}")
    return (f"{first['value']} vs {first['baseline']} on {first['config']['device']}: {span} throughput "
            f"over {over} ({how}; {ci})")


def summaries(found: list[dict]) -> list[str]:
    """One `summary` line per dimension, value and device, in the order first found."""
    groups: dict[tuple, list[dict]] = {}
    for c in found:
        groups.setdefault((c["dimension"], c["value"], c["config"]["device"]), []).append(c)
    return [summary(g) for g in groups.values()]


def section(t: dict[str, np.ndarray], rows, windowed: dict[str, np.ndarray] | None = None) -> list:
    """The report's "Precisions and backends" blocks, or none when nothing was compared."""
    found, missing = contrasts(t, rows, windowed), unavailable(t, rows)
    if not found and not missing:
        return []
    items = summaries(found)
    items += [f"{u['value']} on {u['device']}: unavailable" + (f" — {u['message']}" if u["message"] else "")
              for u in missing]
    blocks = [D.Heading("Precisions and backends"),
              D.Para("Each configuration against its twin that differs only in being fp32, eager or sdpa "
                     "attention. Ratios are value / baseline: a throughput ratio above 1× is faster, a p99 ratio "
                     "below 1× a shorter tail."),
              D.Bullets(items)]
    if found:
        omit = ("model",) + constant_columns(t)
        table = [[f"{c['value']} vs {c['baseline']}", label(c["config"], (c["dimension"], *omit)) or "—",
                  _times(c["throughput_ratio"]), "yes" if c["cis_apart"] else "no", _times(c["p99_ratio"])]
                 for c in found]
        blocks.append(D.Table(["contrast", "configuration", "throughput ratio", "95 % CIs apart", "p99 ratio"],
                              table, align="llrlr"))
    return blocks


def _ratio(value: float, baseline: float) -> float:
    """value / baseline, NaN where either is unknown (a p99 from too few iterations, say)."""
    return float(value / baseline) if baseline > 0 and math.isfinite(value / baseline) else math.nan


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if math.isfinite(ratio) else "—"


def _and(values: list) -> str:
    return ", ".join(map(str, values[:-1])) + f" and {values[-1]}" if len(values) > 1 else str(values[0])
