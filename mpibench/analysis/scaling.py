"""Scaling runs (the /scaling group): aggregate throughput and parallel efficiency against ranks and nodes.

Each /scaling row is one configuration measured on n_ranks ranks at once (over n_nodes nodes);
efficiency = aggregate throughput / (n_ranks x the single-rank throughput), as the run recorded it.
Where the file says which axis a step belongs to (`by`: ranks or nodes), each figure uses its own
steps; a step whose aggregate is unknown (a rank failed) is left out of the figures and the summary.
"""

from __future__ import annotations

import math

import numpy as np

from mpibench.analysis.table import KEY, col, config_of, fmt, group_rows, label

#: Efficiency below this is called poor scaling in the report.
GOOD_EFFICIENCY = 0.8


def steps(scaling: dict[str, np.ndarray], axis: str = "n_ranks") -> np.ndarray:
    """Rows with a known aggregate that belong to the given axis (n_ranks or n_nodes)."""
    keep = np.isfinite(col(scaling, "aggregate_throughput_sps").astype(float))
    if "by" in scaling:
        keep &= np.asarray(scaling["by"]).astype(str) == ("nodes" if axis == "n_nodes" else "ranks")
    return np.flatnonzero(keep)


def series(scaling: dict[str, np.ndarray], rows=None) -> dict[tuple, np.ndarray]:
    """Row indices per configuration, ordered by rank count then node count."""
    by = tuple(k for k in KEY if k in scaling)
    out = {}
    for key, idx in group_rows(scaling, by, rows).items():
        out[key] = idx[np.lexsort((col(scaling, "n_nodes", 1)[idx], col(scaling, "n_ranks", 1)[idx]))]
    return out


def summary(scaling: dict[str, np.ndarray]) -> list[dict]:
    """Per configuration: the largest rank count, its efficiency, and the largest that stays efficient."""
    rows = []
    eff = col(scaling, "efficiency").astype(float)
    ranks = col(scaling, "n_ranks", 1).astype(int)
    for idx in series(scaling, steps(scaling)).values():
        good = idx[eff[idx] >= GOOD_EFFICIENCY]
        top = idx[-1]
        rows.append({**{k: v for k, v in config_of(scaling, top).items() if k in scaling},
                     "max_ranks": int(ranks[top]), "max_nodes": int(col(scaling, "n_nodes", 1)[top]),
                     "aggregate_throughput_sps": float(col(scaling, "aggregate_throughput_sps")[top]),
                     "efficiency_at_max": float(eff[top]),
                     "largest_efficient_ranks": int(ranks[good].max()) if len(good) else None})
    return rows


def describe(row: dict) -> str:
    """One sentence for the report."""
    name = label(row, tuple(k for k in KEY if k not in row) + ("model",))
    eff = row["efficiency_at_max"]
    text = (f"{name}: {row['max_ranks']} ranks on {row['max_nodes']} node(s) give "
            f"{fmt(row['aggregate_throughput_sps'])} samples/s at "
            f"{eff:.0%} parallel efficiency" if math.isfinite(eff) else f"{name}: efficiency unknown")
    if row["largest_efficient_ranks"] is None:
        return text + f"; efficiency is below {GOOD_EFFICIENCY:.0%} at every rank count"
    if row["largest_efficient_ranks"] < row["max_ranks"]:
        return text + (f"; efficiency stays ≥ {GOOD_EFFICIENCY:.0%} up to "
                       f"{row['largest_efficient_ranks']} ranks")
    return text
