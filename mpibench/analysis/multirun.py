"""Several runs in one report: the same sweep on two partitions or clusters, or before and after an upgrade.

Configurations are matched across runs on the sweep dimensions every run records. Each run states its
figures as its own report does (mpibench.analysis.table.per_configuration: windows combined); the first
run is the reference, and each other run's throughput is judged against it as `--compare` judges: a
change is significant when the two 95 % CIs are apart. The figures overlay the runs, one line each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mpibench.analysis import document as D
from mpibench.analysis import plots as P
from mpibench.analysis.pipeline import Analysis, analyze
from mpibench.analysis.table import col, config_of, converged, fmt, key_columns, label
from mpibench.errors import UsageError

#: The figures overlaid: (file name, title, y label, value column, CI columns, log y).
FIGURES = (("throughput_runs", "Throughput vs batch size", "throughput (samples/s)", "throughput_sps",
            "throughput_ci_low_sps", "throughput_ci_high_sps", False),
           ("per_sample_latency_runs", "Per-sample latency vs batch size", "latency per sample (ms, log scale)",
            "per_sample_ms", "per_sample_ci_low_ms", "per_sample_ci_high_ms", True))
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Runs:
    labels: list[str]
    analyses: list[Analysis]
    columns: tuple[str, ...]  # the dimensions configurations are matched on
    rows: dict[tuple, list[int | None]]  # configuration -> its row in each run's table (None: not measured)


def labels_of(paths: list[Path], attrs: list[dict]) -> list[str]:
    """Each run's `--label`, else its file name; where two would read alike, the path as given."""
    names = [str(a.get("label") or "") or p.name for p, a in zip(paths, attrs)]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def analyze_runs(paths: list[str | Path]) -> Runs:
    paths = [Path(p) for p in paths]
    seen = [p.resolve() for p in paths]
    for p, r in zip(paths, seen):
        if seen.count(r) > 1:
            raise UsageError(f"{str(p)!r} is given twice; give each run once")
    analyses = [analyze(p) for p in paths]
    columns = _matched_on(paths, analyses)
    rows: dict[tuple, list[int | None]] = {}
    for k, a in enumerate(analyses):
        for i in a.rows.tolist():
            key = tuple(config_of(a.tasks, i)[c] for c in columns)
            rows.setdefault(key, [None] * len(analyses))[k] = i
    order = sorted(rows, key=lambda key: tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in key))
    return Runs(labels_of(paths, [a.run.attrs for a in analyses]), analyses, columns, {k: rows[k] for k in order})


def _matched_on(paths: list[Path], analyses: list[Analysis]) -> tuple[str, ...]:
    """The dimensions every run records. A run that varies a dimension another run does not record
    (an older schema) cannot be matched with it: its configurations would collapse into one."""
    have = [set(key_columns(a.tasks)) for a in analyses]
    common = tuple(c for c in key_columns(analyses[0].tasks) if all(c in h for h in have))
    for p, a, h in zip(paths, analyses, have):
        varied = [c for c in sorted(h - set(common)) if len(set(col(a.tasks, c, "")[a.rows].tolist())) > 1]
        if varied:
            other = next(q for q, g in zip(paths, have) if not set(varied) <= g)
            raise UsageError(f"{str(p)!r} varies {', '.join(varied)}, which {str(other)!r} does not record "
                             f"(schema {_schema(analyses[paths.index(other)])}); these runs cannot be matched")
    return common


def _schema(a: Analysis) -> str:
    return str(a.run.attrs.get("schema_version", "?"))


def figure(runs: Runs, k: int, i: int | None, name: str) -> float:
    """A figure of run k's row i (NaN where it has none or the row is not ok)."""
    t = runs.analyses[k].tasks
    if i is None or str(col(t, "status", "ok")[i]) != "ok":
        return math.nan
    return float(col(t, name)[i])


def verdict(runs: Runs, rows: list[int | None]) -> str:
    """Each other run against the first: the throughput change, and whether the 95 % CIs are apart."""
    if rows[0] is None or not figure(runs, 0, rows[0], "throughput_sps") > 0:
        return "no reference (not measured in " + runs.labels[0] + ")"
    ref = [figure(runs, 0, rows[0], c) for c in ("throughput_sps", "throughput_ci_low_sps", "throughput_ci_high_sps")]
    out = []
    for k in range(1, len(runs.labels)):
        value, low, high = (figure(runs, k, rows[k], c)
                            for c in ("throughput_sps", "throughput_ci_low_sps", "throughput_ci_high_sps"))
        if not value > 0:
            status = "missing" if rows[k] is None else str(col(runs.analyses[k].tasks, "status", "ok")[rows[k]])
            out.append(f"{runs.labels[k]}: {status}")
            continue
        change = (value / ref[0] - 1) * 100
        apart = high < ref[1] or low > ref[2]
        how = f"{'faster' if change > 0 else 'slower'}, 95 % CIs apart" if apart else "CIs overlap"
        out.append(f"{runs.labels[k]}: {change:+.1f} % ({how})")
    return "; ".join(out)


def build(runs: Runs, made: list[P.FigureFile]) -> list:
    title = "mpibench report: " + " vs ".join(runs.labels)
    blocks: list = [D.Heading(title, 1)]
    facts = [[lab, str(a.run.path), str(a.run.attrs.get("start_time", "—")), _hosts(a),
              f"{len(a.rows)}", "yes" if a.run.complete else "**no**"]
             for lab, a in zip(runs.labels, runs.analyses)]
    blocks += [D.Heading("Runs"), D.Table(["run", "file", "started", "devices", "configurations", "complete"], facts,
                                          align="llllrl")]
    shared = sum(all(i is not None for i in rows) for rows in runs.rows.values())
    verdicts = {key: verdict(runs, rows) for key, rows in runs.rows.items()}  # once per configuration
    apart = [key for key, text in verdicts.items() if "CIs apart" in text]
    blocks.append(D.Para(
        f"{len(runs.rows)} configurations, {shared} measured in every run, matched on {', '.join(runs.columns)}. "
        f"Throughput is samples/s from the median end-to-end latency with its 95 % CI, as each run's own report "
        f"states it; each run is compared with **{runs.labels[0]}**, and a change is significant only where the "
        f"two CIs are apart ({len(apart)} configuration{'s' * (len(apart) != 1)} here)."))
    header = ["configuration", *(f"{lab} samples/s [95 % CI]" for lab in runs.labels), f"vs {runs.labels[0]}"]
    omit = ("model",) if len({str(a.tasks["model"][0]) for a in runs.analyses if len(a.rows)}) <= 1 else ()
    body = [[label(dict(zip(runs.columns, key)), omit) or "—",
             *(_cell(runs, k, i) for k, i in enumerate(rows)), verdicts[key]]
            for key, rows in runs.rows.items()]
    blocks += [D.Heading("Throughput per configuration"), D.Table(header, body, align="l" + "r" * len(runs.labels) + "l")]
    blocks.append(D.Heading("Figures"))
    for f in made:
        blocks += [D.Heading(f.title, 3), D.Image(Path(f.path.name), f.title, f.caption)]
    return blocks


def _hosts(a: Analysis) -> str:
    names = sorted(set(col(a.tasks, "device_name", "")[a.rows].astype(str).tolist()) - {""})
    return ", ".join(names) or "—"


def _cell(runs: Runs, k: int, i: int | None) -> str:
    if i is None:
        return "—"
    t = runs.analyses[k].tasks
    status = str(col(t, "status", "ok")[i])
    if status != "ok":
        return status
    value, low, high = (float(col(t, c)[i]) for c in ("throughput_sps", "throughput_ci_low_sps", "throughput_ci_high_sps"))
    text = f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"
    return text if converged(t)[i] else text + " (not converged)"


def overlay(runs: Runs, out: Path, name: str, title: str, ylabel: str, y: str, lo: str, hi: str,
            logy: bool) -> P.FigureFile | None:
    """One panel per configuration but the batch size (at most MAX_PANELS), one line per run."""
    series: dict[tuple, list[list[int]]] = {}
    b = runs.columns.index("batch_size")
    for key, rows in runs.rows.items():
        lines = series.setdefault(key[:b] + key[b + 1:], [[] for _ in runs.labels])
        for k, i in enumerate(rows):
            if i is not None and math.isfinite(figure(runs, k, i, y)):
                lines[k].append(i)
    series = {key: lines for key, lines in series.items() if any(lines)}
    if not series:
        return None
    shown = dict(list(series.items())[:P.MAX_PANELS])
    fig, axes = P.new_figure(len(shown))
    rest = tuple(c for c in runs.columns if c != "batch_size")
    panels = []
    for ax, (key, lines) in zip(axes, shown.items()):
        sizes = []
        for k, idx in enumerate(lines):
            if not idx:
                continue
            t = runs.analyses[k].tasks
            idx = sorted(idx, key=lambda i: t["batch_size"][i])
            x, v = t["batch_size"][idx], col(t, y)[idx].astype(float)
            colour, marker = RUN_COLORS[k % len(RUN_COLORS)], P.MARKERS[k % len(P.MARKERS)]
            ax.errorbar(x, v, yerr=P.ci_yerr(v, col(t, lo)[idx], col(t, hi)[idx]), color=colour, marker=marker,
                        linestyle=P.LINESTYLES[k % len(P.LINESTYLES)], capsize=3, label=runs.labels[k])
            loose = ~converged(t)[idx]
            if loose.any():
                ax.plot(x[loose], v[loose], linestyle="none", marker=marker, markerfacecolor="white", color=colour)
            sizes += x.tolist()
        P.batch_axis(ax, sizes)
        ax.set_yscale("log") if logy else ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(label(dict(zip(rest, key)), ("model", "batch_size")) or "all", fontsize="medium")
        panels.append((ax, []))
    P.legend(fig, panels, loc="best")
    note = f"showing {len(shown)} of {len(series)} panels" if len(series) > len(shown) else ""
    path = P.save(fig, out / f"{name}.png", f"{title}, by run", note)
    return P.FigureFile(name, path, f"{title}, by run",
                        "One line per run; error bars: 95 % CI; hollow markers did not converge.")


def write_all(runs: Runs, out: Path) -> list[Path]:
    """report.md, report.html (self-contained) and the overlaid figures, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    made = [f for f in (overlay(runs, out, *spec) for spec in FIGURES) if f is not None]
    blocks = build(runs, made)
    title = "mpibench report: " + " vs ".join(runs.labels)
    (out / "report.md").write_text(D.to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(D.to_html(blocks, title, out), encoding="utf-8")
    return [out / "report.md", out / "report.html", *(f.path for f in made)]
