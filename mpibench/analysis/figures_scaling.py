"""Scaling figures: aggregate throughput and parallel efficiency against ranks, and against nodes."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FixedLocator, NullLocator

from mpibench.analysis import plots as P
from mpibench.analysis.pipeline import Analysis
from mpibench.analysis.scaling import GOOD_EFFICIENCY, series, steps
from mpibench.analysis.table import KEY, col, constant_columns, label

#: Lines in one panel before the figure stops being readable.
MAX_LINES = 10


def by_ranks(a: Analysis, out):
    return ranks_figure(a.run.scaling, out)


def by_nodes(a: Analysis, out):
    return nodes_figure(a.run.scaling, out)


def ranks_figure(s: dict[str, np.ndarray] | None, out):
    """by_ranks from the /scaling table alone (`mpibench.store.read_scaling`), without an Analysis."""
    return _figure(s, out, "n_ranks", "ranks", "scaling_ranks")


def nodes_figure(s: dict[str, np.ndarray] | None, out):
    """by_nodes from the /scaling table alone; None unless the run spanned several node counts."""
    if s is None or len(set(col(s, "n_nodes", 1)[steps(s, "n_nodes")].tolist())) < 2:
        return None
    return _figure(s, out, "n_nodes", "nodes", "scaling_nodes")


def _figure(s: dict[str, np.ndarray] | None, out, x_col: str, unit: str, name: str):
    if s is None or len(steps(s, x_col)) == 0:
        return None
    groups = _lines(s, x_col)
    note = f"showing {MAX_LINES} of {len(groups)} configurations" if len(groups) > MAX_LINES else ""
    groups = dict(list(groups.items())[:MAX_LINES])
    fig, (ax_thr, ax_eff) = P.new_figure(2, max_cols=2)
    xs = sorted({int(v) for v in col(s, x_col, 1)[steps(s, x_col)].tolist()})
    omit = constant_columns(s, KEY) + ("model",)
    for name_, (idx, config_k, variant_k) in groups.items():
        x = col(s, x_col, 1)[idx].astype(float)
        agg = col(s, "aggregate_throughput_sps")[idx].astype(float)
        style = {"color": f"C{config_k % 10}", "marker": P.MARKERS[variant_k % len(P.MARKERS)],
                 "linestyle": P.LINESTYLES[variant_k % len(P.LINESTYLES)], "linewidth": 1.6, "label": name_}
        ax_thr.plot(x, agg, **style)
        ax_thr.plot(x, agg[0] * x / x[0], color=style["color"], linestyle=":", linewidth=1, alpha=0.8)
        ax_eff.plot(x, col(s, "efficiency")[idx], **style)
    ax_thr.plot([], [], color="grey", linestyle=":", label="ideal (linear from the smallest)")
    ax_eff.axhline(1.0, color="black", linewidth=1, alpha=0.6)
    ax_eff.axhline(GOOD_EFFICIENCY, color="grey", linestyle="--", linewidth=1,
                   label=f"{GOOD_EFFICIENCY:.0%} efficiency")
    for ax in (ax_thr, ax_eff):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(v) for v in xs])
        ax.set_xlabel(f"{unit} (log2 scale)")
        ax.legend(fontsize="small")
    ax_thr.set_yscale("log")
    ax_thr.set_ylabel("aggregate throughput (samples/s, log scale)")
    ax_thr.set_title(f"Aggregate throughput vs {unit}", fontsize="medium")
    ax_eff.set_ylabel("parallel efficiency (aggregate / ideal)")
    ax_eff.set_ylim(0, max(1.1, float(np.nanmax(col(s, "efficiency")[steps(s, x_col)])) * 1.05))
    ax_eff.set_title(f"Parallel efficiency vs {unit}", fontsize="medium")
    context = label({k: s[k][0] for k in omit if k in s and len(s[k])}, tuple(k for k in KEY if k not in omit))
    path = P.save(fig, out / f"{name}.png", f"Scaling with {unit}" + (f" — {context}" if context else ""), note)
    return P.FigureFile(name, path, f"Scaling with {unit}",
                        f"Aggregate throughput of all ranks (dotted: perfect linear scaling) and parallel "
                        f"efficiency, per configuration, against the number of {unit}.")


def _lines(s: dict, x_col: str) -> dict[str, tuple[np.ndarray, int, int]]:
    """Named lines (rows, colour index, style index): one colour per configuration and, against nodes,
    one line style per ranks-per-node."""
    omit = constant_columns(s, KEY) + tuple(k for k in KEY if k not in s) + ("model",)
    out = {}
    for k, (key, idx) in enumerate(series(s, steps(s, x_col)).items()):
        base = label({c: s[c][idx[0]] for c in KEY if c in s}, omit)
        if x_col == "n_nodes":
            per_node = col(s, "n_ranks", 1)[idx] // np.maximum(col(s, "n_nodes", 1)[idx], 1)
            for v, ppn in enumerate(sorted(set(per_node.tolist()))):
                sub = idx[per_node == ppn]
                name = ", ".join(x for x in (base, f"{ppn} rank{'s' if ppn != 1 else ''}/node") if x)
                out[name] = (sub[np.argsort(col(s, "n_nodes", 1)[sub], kind="stable")], k, v)
        else:
            per_x = {}
            for i in idx:  # one point per rank count (several node counts: the fewest nodes)
                per_x.setdefault(int(col(s, "n_ranks", 1)[i]), i)
            out[base or "measured"] = (np.array(list(per_x.values()), dtype=int), k, 0)
    return out
