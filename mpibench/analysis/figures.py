"""The batch-size figures: throughput, per-sample latency (anomalies marked), phases, percentiles,
energy, the throughput-latency Pareto front, and for generation output tokens/s, time to first token,
time per output token and energy per token. Each returns a FigureFile, or None without data."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mpibench.analysis import plots as P
from mpibench.analysis.pipeline import Analysis
from mpibench.analysis.profile import MIN_EFFECT_PCT, SERIES
from mpibench.analysis.table import col, constant_columns, converged, energy_measured, generated, present
from mpibench.stats import PHASES


def _ok_rows(a: Analysis) -> np.ndarray:
    return a.rows[(col(a.tasks, "status", "ok")[a.rows] == "ok")
                  & np.isfinite(a.tasks["throughput_sps"][a.rows])]


def _context(a: Analysis) -> tuple[str, tuple[str, ...]]:
    """Suptitle suffix for what every panel shares, and which panel keys vary."""
    const = constant_columns(a.tasks, ("model", "seq_len", "threads"))
    t = a.tasks
    bits = [str(t["model"][0]) if "model" in const and len(t["model"]) else "",
            f"seq {t['seq_len'][0]}" if "seq_len" in const and len(t["seq_len"]) else "",
            _threads(t["threads"][0]) if "threads" in const and len(t["threads"]) else ""]
    varying = tuple(k for k in ("model", "seq_len", "threads") if k not in const)
    return " — " + ", ".join(b for b in bits if b) if any(bits) else "", varying


def _threads(n) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _mark_recommended(ax, a: Analysis, idx, y_col: str, x_col: str = "batch_size",
                      objective: str = "throughput") -> bool:
    """The recommended configuration of this panel, if it is in it: a star (a diamond for latency)."""
    chosen = {r["task_id"] for r in a.recommended(objective)}
    hit = [i for i in idx if int(a.tasks["task_id"][i]) in chosen]
    for i in hit:
        ax.plot(a.tasks[x_col][i], a.tasks[y_col][i], linestyle="none", zorder=5,
                **(_DIAMOND_STYLE if objective == "latency" else _STAR_STYLE))
    return bool(hit)


_ANOMALY = {"faster": "#2ca02c", "slower": "#d62728"}
_STAR_STYLE = {"marker": "*", "markersize": 19, "color": "gold", "markeredgecolor": "black"}
_DIAMOND_STYLE = {"marker": "D", "markersize": 11, "markerfacecolor": "none", "markeredgecolor": "black",
                  "markeredgewidth": 2}
_STAR = Line2D([], [], linestyle="none", label="recommended (throughput)", **{**_STAR_STYLE, "markersize": 13})
_HOLLOW = Line2D([], [], marker="o", markerfacecolor="white", color="grey", linestyle="none",
                 label="did not converge")
_FAILED = Line2D([], [], marker="x", color="black", linestyle="none", markersize=8,
                 label="failed / out of memory")


def _series_plot(ax, a: Analysis, lay: P.Layout, idx, y: str, lo: str | None, hi: str | None):
    t = a.tasks
    for s in lay.lines(t, idx):
        st = lay.style(t, s)
        x = t["batch_size"][s]
        yerr = P.ci_yerr(t[y][s], t[lo][s], t[hi][s]) if lo else None
        ax.errorbar(x, t[y][s], yerr=yerr, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                    label=st["label"], capsize=3, linewidth=1.6, markersize=5)
        _hollow(ax, t, s, "batch_size", y, st)


def _hollow(ax, t: dict, s, x: str, y: str, st: dict, marker: str | None = None) -> None:
    """The unconverged points of a series drawn again over their filled markers, hollow."""
    bad = s[~converged(t)[s]]
    ax.plot(t[x][bad], t[y][bad], marker=marker or st["marker"], markerfacecolor="white", color=st["color"],
            linestyle="none", markersize=7, zorder=4)


def _panel_rows(a: Analysis, lay: P.Layout, key: tuple) -> np.ndarray:
    """Every configuration in a panel, whatever its status."""
    inside = np.ones(len(a.rows), dtype=bool)
    for name, value in zip(lay.by, key):
        inside &= col(a.tasks, name, "")[a.rows] == value
    return a.rows[inside]


def _failed_marks(ax, a: Analysis, lay: P.Layout, key: tuple) -> bool:
    """A cross on the x-axis at each batch size that failed or ran out of memory."""
    rows = _panel_rows(a, lay, key)
    failed = rows[np.isin(col(a.tasks, "status", "ok")[rows], ("failed", "oom"))]
    if len(failed):
        ax.plot(a.tasks["batch_size"][failed], np.full(len(failed), 0.03), marker="x", color="black",
                linestyle="none", markersize=8, transform=ax.get_xaxis_transform(), clip_on=False)
    return bool(len(failed))


def _batch_figure(a: Analysis, out, name, title, ylabel, y, lo, hi, caption, *, rows=None, logy=None,
                  extra=None, objective: str = "throughput"):
    rows = _ok_rows(a) if rows is None else rows
    if len(rows) == 0:
        return None
    suffix, varying = _context(a)
    lay = P.layout(a.tasks, rows, prefer=a.recommended_rows)
    fig, axes = P.new_figure(len(lay.groups))
    legends = []
    for ax, (key, idx) in zip(axes, lay.groups.items()):
        _series_plot(ax, a, lay, idx, y, lo, hi)
        P.batch_axis(ax, a.tasks["batch_size"][_panel_rows(a, lay, key)])
        handles = []
        if extra:
            handles += extra(ax, key, idx) or []
        if _mark_recommended(ax, a, idx, y, objective=objective):
            handles.append(_STAR if objective == "throughput" else
                           Line2D([], [], linestyle="none", label=f"recommended ({objective})",
                                  **{**_STAR_STYLE, "markersize": 13}))
        if _failed_marks(ax, a, lay, key):
            handles.append(_FAILED)
        if (~converged(a.tasks)[idx]).any():
            handles.append(_HOLLOW)
        values = a.tasks[y][idx]
        if logy if logy is not None else np.nanmax(values) / max(np.nanmin(values), 1e-12) > 30:
            ax.set_yscale("log")  # spans more than a decade and a half
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(lay.title(a.tasks, key, varying), fontsize="medium")
        legends.append((ax, handles))
    P.legend(fig, legends, loc="best")
    path = P.save(fig, out / f"{name}.png", title + suffix, lay.note)
    return P.FigureFile(name, path, title, caption)


def throughput(a: Analysis, out):
    return _batch_figure(
        a, out, "throughput", "Throughput vs batch size", "throughput (samples/s)",
        "throughput_sps", "throughput_ci_low_sps", "throughput_ci_high_sps",
        "Samples per second from the median end-to-end latency; error bars: 95 % CI. Hollow markers did "
        "not converge; ✕ marks batch sizes that failed; ★ is the recommended configuration.")


def per_sample_latency(a: Analysis, out):
    t = a.tasks

    def anomalies(ax, key, idx):
        kinds = []
        for i in idx[t["anomaly"][idx] != ""]:
            j, m = t["trend_left"][i], t["trend_right"][i]
            ax.plot([t["batch_size"][j], t["batch_size"][m]], [t["per_sample_ms"][j], t["per_sample_ms"][m]],
                    color="grey", linestyle=(0, (2, 2)), linewidth=1.2, zorder=1)
            kind = t["anomaly"][i]
            ax.plot(t["batch_size"][i], t["per_sample_ms"][i], marker="o", markersize=16, markerfacecolor="none",
                    markeredgecolor=_ANOMALY[kind], markeredgewidth=2, linestyle="none")
            ax.annotate(f"{t['departure_pct'][i]:+.0f} % vs trend", (t["batch_size"][i], t["per_sample_ms"][i]),
                        textcoords="offset points", xytext=(10, 8), fontsize="small", color=_ANOMALY[kind],
                        fontweight="bold")
            kinds.append(kind)
        handles = [Line2D([], [], marker="o", markersize=10, markerfacecolor="none", markeredgecolor=_ANOMALY[k],
                          markeredgewidth=2, linestyle="none", label=f"{k} than the trend (95 % CIs apart)")
                   for k in ("faster", "slower") if k in kinds]
        if kinds:
            handles.append(Line2D([], [], color="grey", linestyle=(0, (2, 2)), label="trend through neighbours"))
        return handles

    return _batch_figure(
        a, out, "per_sample_latency", "Per-sample latency vs batch size",
        "latency per sample (ms, log scale)", "per_sample_ms", "per_sample_ci_low_ms",
        "per_sample_ci_high_ms",
        "Median end-to-end latency divided by batch size; error bars: 95 % CI. Circled batch sizes depart "
        f"from the trend through their neighbours (dashed) by at least {MIN_EFFECT_PCT:.0f} % with CIs apart.",
        logy=True, extra=anomalies)


def percentiles(a: Analysis, out):
    rows = _ok_rows(a)
    if len(rows) == 0:
        return None
    t = a.tasks
    suffix, varying = _context(a)
    lay = P.layout(t, rows, prefer=a.recommended_rows)
    fig, axes = P.new_figure(len(lay.groups))
    legends = []
    styles = (("e2e_p50_ms", "p50", "-", "o"), ("e2e_p90_ms", "p90", "--", "^"), ("e2e_p99_ms", "p99", ":", "v"))
    for ax, (key, idx) in zip(axes, lay.groups.items()):
        lines = [(s, lay.style(t, s)) for s in lay.lines(t, idx)]
        for s, st in lines:
            for colname, _, ls, mk in styles:
                yerr = None
                if colname == "e2e_p99_ms" and "p99_ci_low_ms" in t:
                    yerr = P.ci_yerr(t[colname][s], t["p99_ci_low_ms"][s], t["p99_ci_high_ms"][s])
                ax.errorbar(t["batch_size"][s], t[colname][s], yerr=yerr, color=st["color"], linestyle=ls,
                            marker=mk, markersize=4, linewidth=1.4, capsize=2)
                _hollow(ax, t, s, "batch_size", colname, st, marker=mk)
        handles = [Patch(color=st["color"], label=st["label"]) for _, st in lines]
        handles += [Line2D([], [], color="black", linestyle=ls, marker=mk, markersize=4, label=lab)
                    for _, lab, ls, mk in styles]
        if (~converged(t)[idx]).any():
            handles.append(_HOLLOW)
        if a.latency_slo_ms is not None:
            ax.axhline(a.latency_slo_ms, color="black", linewidth=1.2, alpha=0.7)
            handles.append(Line2D([], [], color="black", alpha=0.7, label=f"SLO {a.latency_slo_ms:g} ms"))
        P.batch_axis(ax, t["batch_size"][idx])
        ax.set_yscale("log")
        ax.set_ylabel("end-to-end latency per batch (ms, log scale)")
        ax.set_title(lay.title(t, key, varying), fontsize="medium")
        legends.append((ax, handles))
    P.legend(fig, legends, ncols=2)
    path = P.save(fig, out / "latency_percentiles.png", "Latency percentiles vs batch size" + suffix, lay.note)
    return P.FigureFile("latency_percentiles", path, "Latency percentiles",
                        "p50, p90 and p99 of the end-to-end latency of one batch; p99 error bars: 95 % CI "
                        "from the raw samples (no upper bar: too few iterations to bound the p99). Hollow "
                        "markers did not converge.")


def energy(a: Analysis, out):
    t = a.tasks
    rows = _ok_rows(a)
    rows = rows[energy_measured(t)[rows]]
    if len(rows) == 0:
        return None
    return _batch_figure(a, out, "energy", "Energy per sample vs batch size", "energy (J/sample)",
                         "j_per_sample", None, None,
                         "Joules per sample from the hardware counters over each measured window "
                         "(one reading per configuration, so no CI); ★ is the configuration recommended for "
                         "energy.", rows=rows, objective="energy")


def phases(a: Analysis, out):
    rows = _ok_rows(a)
    if len(rows) == 0:
        return None
    t = a.tasks
    suffix, varying = _context(a)
    by = present(t, tuple(dict.fromkeys(("device", "precision", *SERIES))))  # one panel per series
    lay = P.layout(t, rows, by=by, prefer=a.recommended_rows)
    fig, axes = P.new_figure(len(lay.groups), height=3.6)
    for ax, (key, idx) in zip(axes, lay.groups.items()):
        bs = t["batch_size"][idx]
        x = np.arange(len(idx))
        bottom = np.zeros(len(idx))
        for p in PHASES:
            per_sample = np.nan_to_num(col(t, f"{p}_mean_ms")[idx] / bs)
            ax.bar(x, per_sample, bottom=bottom, color=P.PHASE_COLORS[p], label=p, width=0.7,
                   edgecolor="white", linewidth=0.5)
            bottom += per_sample
        fwd = np.nan_to_num(col(t, "forward_mean_ms")[idx] / bs)
        for xi, total, f in zip(x, bottom, fwd):
            if total > 0:
                ax.annotate(f"fwd {f / total:.0%}", (xi, total), textcoords="offset points", xytext=(0, 2),
                            ha="center", fontsize="x-small")
        ax.set_xticks(x, [str(b) for b in bs])
        ax.set_xlabel("batch size (samples per forward pass)")
        ax.set_ylabel("mean time per sample (ms)")
        ax.set_ylim(0, bottom.max() * 1.15 if bottom.max() > 0 else 1)
        ax.set_title(lay.title(t, key, varying), fontsize="medium")
    P.legend(fig, [(axes[0], [])], loc="upper right")  # the same four colours in every panel
    path = P.save(fig, out / "phases.png", "Where the time goes: phases per sample" + suffix, lay.note)
    return P.FigureFile("phases", path, "Phase breakdown",
                        "Mean time per sample of each phase (tokenisation, copy to the device, forward pass, "
                        "logits to host), stacked; the label is the forward pass's share.")


def pareto(a: Analysis, out):
    t = a.tasks
    rows = _ok_rows(a)
    rows = rows[np.isfinite(t["latency_p99_ms"][rows])]
    if len(rows) == 0:
        return None
    suffix, varying = _context(a)
    lay = P.layout(t, rows, prefer=a.recommended_rows)
    fig, axes = P.new_figure(len(lay.groups))
    legends = []
    for ax, (key, idx) in zip(axes, lay.groups.items()):
        for s in lay.lines(t, idx):
            st = lay.style(t, s)
            ax.plot(t["latency_p99_ms"][s], t["throughput_sps"][s], marker=st["marker"], color=st["color"],
                    linestyle="none", label=st["label"], markersize=6, alpha=0.85)
            _hollow(ax, t, s, "latency_p99_ms", "throughput_sps", st)
        front = pareto_front(t["latency_p99_ms"][idx], t["throughput_sps"][idx])
        f = idx[front]
        ax.step(t["latency_p99_ms"][f], t["throughput_sps"][f], where="post", color="black", linewidth=1.2,
                label="Pareto front", zorder=1)
        for i in f:
            ax.annotate(f"bs {t['batch_size'][i]}", (t["latency_p99_ms"][i], t["throughput_sps"][i]),
                        textcoords="offset points", xytext=(5, -11), fontsize="x-small")
        star = _mark_recommended(ax, a, idx, "throughput_sps", x_col="latency_p99_ms")
        diamond = _mark_recommended(ax, a, idx, "throughput_sps", x_col="latency_p99_ms", objective="latency")
        if a.latency_slo_ms is not None:
            ax.axvline(a.latency_slo_ms, color="black", alpha=0.6, linestyle="--",
                       label=f"SLO {a.latency_slo_ms:g} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(0.08)
        ax.set_xlabel("p99 latency (ms, log scale): per batch, per request for a server")
        ax.set_ylabel("throughput (samples/s, log scale)")
        ax.set_title(lay.title(t, key, varying), fontsize="medium")
        handles = [_STAR] if star else []
        if diamond:
            what = f"p99 ≤ {a.latency_slo_ms:g} ms" if a.latency_slo_ms is not None else "lowest p99"
            handles.append(Line2D([], [], linestyle="none", label=f"recommended (latency: {what})",
                                  **{**_DIAMOND_STYLE, "markersize": 8}))
        if (~converged(t)[idx]).any():
            handles.append(_HOLLOW)
        legends.append((ax, handles))
    P.legend(fig, legends, loc="lower right")
    path = P.save(fig, out / "pareto.png", "Throughput–latency trade-off" + suffix, lay.note)
    return P.FigureFile("pareto", path, "Throughput–latency Pareto front",
                        "Every configuration that ran (hollow markers did not converge); the line joins those "
                        "that no other configuration beats on both p99 latency and throughput.")


def pareto_front(latency: np.ndarray, throughput: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower latency and higher throughput)."""
    order = np.lexsort((-throughput, latency))
    front, best = [], -np.inf
    for i in order:
        if throughput[i] > best:
            front.append(i)
            best = throughput[i]
    return np.array(front, dtype=int)


def _generated(a: Analysis) -> np.ndarray:
    return generated(a.tasks, _ok_rows(a))


def output_tokens(a: Analysis, out):
    bound = f" (TPOT ≤ {a.tpot_slo_ms:g} ms)" if a.tpot_slo_ms is not None else ""
    return _batch_figure(
        a, out, "output_tokens", "Output tokens/s vs batch size (generation)", "output tokens/s",
        "output_tokens_per_s", "output_tokens_ci_low_per_s", "output_tokens_ci_high_per_s",
        "Tokens generated per second: batch size x new tokens over the median request latency (a server's: "
        f"what it delivered); error bars: 95 % CI. ★ is the configuration recommended for tokens/s{bound}.",
        rows=_generated(a), objective="tokens")


def ttft(a: Analysis, out):
    return _batch_figure(
        a, out, "ttft", "Time to first token vs batch size (generation)", "time to first token, median (ms)",
        "ttft_p50_ms", "ttft_ci_low_ms", "ttft_ci_high_ms",
        "Preprocess, host-to-device and the prefill that gives the first token (a server's: from each request's "
        "arrival, queueing included); error bars: 95 % CI of the median.", rows=_generated(a), objective="tokens")


def tpot(a: Analysis, out):
    def slo_line(ax, key, idx):
        if a.tpot_slo_ms is None:
            return []
        ax.axhline(a.tpot_slo_ms, color="grey", linestyle=":", linewidth=1.2)
        return [Line2D([], [], color="grey", linestyle=":", label=f"TPOT SLO {a.tpot_slo_ms:g} ms")]

    return _batch_figure(
        a, out, "tpot", "Time per output token vs batch size (generation)", "time per output token (ms)",
        "tpot_mean_ms", "tpot_ci_low_ms", "tpot_ci_high_ms",
        "The mean decode step after the first token; error bars: 95 % CI over the iterations. A larger batch "
        "makes more tokens per step at a longer step: the tokens/s figure shows the trade.",
        rows=_generated(a), extra=slo_line, objective="tokens")


def energy_per_token(a: Analysis, out):
    rows = _generated(a)
    return _batch_figure(a, out, "energy_per_token", "Energy per output token vs batch size (generation)",
                         "energy (J/token)", "j_per_token", None, None,
                         "Joules per generated token from the hardware counters over each measured window (one "
                         "reading per configuration, so no CI).", rows=rows[energy_measured(a.tasks)[rows]],
                         objective="energy")


#: Drawn where a run generated (--workload generate), absent otherwise.
GENERATION = (output_tokens, ttft, tpot, energy_per_token)
ALL = (throughput, per_sample_latency, phases, percentiles, energy, pareto, *GENERATION)
