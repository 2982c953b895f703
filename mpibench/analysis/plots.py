"""Shared figure machinery: panels, colours, the batch-size axis, saving.

Figures are built on `matplotlib.figure.Figure` (rendered by Agg when saved as PNG), never through
pyplot, so analysis changes no global matplotlib state and works without a display.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from mpibench.analysis.table import WORKLOAD, col, config_of, group_rows, label, present
from mpibench.task import DEFAULTS, LABEL_ORDER, with_role

DPI = 150
#: More panels than this in one figure become unreadable; the rest are in the report's tables.
MAX_PANELS = 12
#: More lines than this in one panel become unreadable; such panels split by precision.
MAX_LINES = 8
PRECISION_COLORS = {"fp32": "#1f77b4", "bf16": "#d62728", "fp16": "#2ca02c"}
PHASE_COLORS = {"preprocess": "#4c72b0", "h2d": "#dd8452", "forward": "#55a868", "postprocess": "#8172b3"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")
#: A panel shows one device and workload; lines inside it are precision (and threads) series.
PANEL = ("device", *WORKLOAD)
LINE = with_role("variant")
#: A line's label beyond precision and threads: the other variants, where not the default.
_VARIANT_OMIT = tuple(k for k in LABEL_ORDER if k not in LINE or k in ("precision", "threads"))


@dataclass(frozen=True)
class FigureFile:
    name: str
    path: Path
    title: str
    caption: str


def new_figure(n_panels: int, *, width: float = 5.4, height: float = 3.9, max_cols: int = 3):
    """A constrained-layout figure with n panels on a grid; unused cells are removed."""
    nrows = max(1, math.ceil(n_panels / max_cols))
    ncols = max(1, math.ceil(n_panels / nrows))  # balanced: 4 panels are 2 x 2, not 3 + 1
    fig = Figure(figsize=(max(7.0, width * ncols), height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.remove()
    for ax in axes[:n_panels]:
        ax.grid(True, which="major", alpha=0.3)
        ax.set_axisbelow(True)
    return fig, list(axes[:n_panels])


def save(fig: Figure, path: Path, title: str, note: str = "") -> Path:
    """Title (wrapped to the figure's width), readable log axes, then the PNG."""
    width = int(fig.get_figwidth() * 8)
    if len(title) > width:  # the context goes on its own line
        title = title.replace(" — ", "\n", 1)
    title = "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in title.split("\n"))
    fig.suptitle(title + (f"\n({note})" if note else ""), fontsize="large", fontweight="bold")
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log" and not isinstance(axis.get_major_locator(), FixedLocator):
                plain_log_ticks(ax, axis)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def legend(fig: Figure, panels: list[tuple], **kw) -> None:
    """One legend: inside the only panel, or beside a grid of panels (styles are the same in all).

    `panels` holds (axes, extra handles) pairs; handles are merged by label, in order.
    """
    merged: dict[str, object] = {}
    for ax, extra in panels:
        handles, labels = ax.get_legend_handles_labels()
        for h in [*handles, *extra]:
            merged.setdefault(h.get_label(), h)
    if not merged:
        return
    if len(panels) == 1:
        panels[0][0].legend(handles=list(merged.values()), fontsize="small", **kw)
    else:
        fig.legend(handles=list(merged.values()), loc="outside lower center", fontsize="small",
                   ncols=min(len(merged), 3 * min(len(panels), 3)))


def plain_log_ticks(ax, axis) -> None:
    """Ticks such as 0.5, 1, 2, 5 (not 5x10^-1) at a density that suits the axis's range."""
    lo, hi = sorted(ax.get_ylim() if axis is ax.yaxis else ax.get_xlim())
    if not (lo > 0 and hi > lo):
        return
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 4:
            break
    if len(ticks) > 9:
        ticks = ticks[:: math.ceil(len(ticks) / 9)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def batch_axis(ax, batch_sizes) -> None:
    """log2 x-axis ticked at exactly the batch sizes measured."""
    ticks = sorted({int(b) for b in batch_sizes})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in ticks])
    if ticks:
        ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)
    ax.set_xlabel("batch size (samples per forward pass, log2 scale)")


@dataclass
class Layout:
    """Which rows go in which panel, and how the lines inside a panel look.

    Lines are (precision, threads) series coloured by precision; when a panel would hold more than
    MAX_LINES of them (a thread sweep), each precision gets its own panels and colour follows threads.
    """

    by: tuple[str, ...]
    groups: dict[tuple, np.ndarray]
    note: str
    threads: list[int]
    colour_by_threads: bool
    variants: list[str]  # backend / attention labels, "" for the defaults

    def lines(self, t: dict, idx: np.ndarray) -> list[np.ndarray]:
        return list(group_rows(t, present(t, LINE), idx).values())

    def style(self, t: dict, s: np.ndarray) -> dict:
        """The same series looks the same in every figure."""
        prec = str(t["precision"][s[0]])
        thr = int(col(t, "threads", 0)[s[0]])
        k = self.threads.index(thr) if thr in self.threads else 0
        variant = label(config_of(t, s[0]), _VARIANT_OMIT)
        v = self.variants.index(variant) if variant in self.variants else 0
        suffix = f", {variant}" if variant else ""
        if self.colour_by_threads:
            colour = matplotlib.colormaps["viridis"](k / max(1, len(self.threads) - 1) * 0.9)
            return {"color": colour, "marker": MARKERS[k % len(MARKERS)], "linestyle": LINESTYLES[v % 4],
                    "label": f"{thr} thread{'s' if thr != 1 else ''}{suffix}"}
        return {"color": PRECISION_COLORS.get(prec, "#555555"), "marker": MARKERS[(k + v) % len(MARKERS)],
                "linestyle": LINESTYLES[(k + v) % len(LINESTYLES)],
                "label": (prec if len(self.threads) <= 1 else f"{prec}, {thr} threads") + suffix}

    def title(self, t: dict, key: tuple, varying: tuple[str, ...] = ()) -> str:
        return textwrap.fill(panel_title(t, key, self.by, varying), 52, break_on_hyphens=False)


def layout(t: dict, rows, by=PANEL, limit: int = MAX_PANELS, prefer=()) -> Layout:
    """Panels of at most MAX_LINES lines each, at most `limit` panels (those holding a row of `prefer`,
    the recommended configurations, first), with a note on what was left out."""
    threads = sorted(set(int(x) for x in col(t, "threads", 0).tolist()))
    by = present(t, by)
    groups = group_rows(t, by, rows)
    many = "precision" not in by and any(len(group_rows(t, present(t, LINE), idx)) > MAX_LINES
                                         for idx in groups.values())
    if many:
        by = by + ("precision",)
        groups = group_rows(t, by, rows)
    note = ""
    if len(groups) > limit:
        note = f"showing {limit} of {len(groups)} panels; every configuration is in the report's tables"
        first = sorted(groups, key=lambda k: not np.isin(groups[k], list(prefer)).any())
        groups = {k: groups[k] for k in first[:limit]}
    variants = sorted({label(config_of(t, i), _VARIANT_OMIT) for i in np.asarray(rows)})
    return Layout(by, groups, note, threads, many, variants)


def panel_title(t: dict, key: tuple, by=PANEL, varying: tuple[str, ...] = ()) -> str:
    parts = []
    for name, value in zip(by, key):
        if name == "device":
            names = sorted(set(col(t, "device_name", "")[np.asarray(col(t, "device", "")) == value].tolist()))
            parts.append(f"{value} ({_short(names[0])})" if len(names) == 1 and names[0] else str(value))
        elif name == "precision":
            parts.append(str(value))
        elif name in DEFAULTS:  # an optional dimension: named where it is not the default
            parts.append(label({name: value}, tuple(k for k in LABEL_ORDER if k != name)))
        elif name in varying:
            parts.append({"seq_len": f"seq {value}", "threads": f"{value} threads"}.get(name, str(value)))
    return " · ".join(p for p in parts if p)


def _short(name: str, n: int = 32) -> str:
    name = " ".join(name.replace("(R)", "").replace("(TM)", "").replace(" CPU", "").split())
    return name if len(name) <= n else name[: n - 1] + "…"


def ci_yerr(value, low, high) -> np.ndarray:
    """errorbar's yerr from CI bounds; unknown bounds draw no bar on that side."""
    v, lo, hi = (np.asarray(a, dtype=float) for a in (value, low, high))
    down = np.where(np.isfinite(lo), v - lo, 0.0)
    up = np.where(np.isfinite(hi), hi - v, 0.0)
    return np.vstack([np.clip(down, 0, None), np.clip(up, 0, None)])


