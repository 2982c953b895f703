"""report.md, report.html, optimal.json and the figures of one analysed run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from mpibench.analysis import contrasts, figures, figures_scaling
from mpibench.analysis import document as D
from mpibench.analysis.optimum import ENERGY_TIE, OBJECTIVES
from mpibench.analysis.pipeline import Analysis, optimal_json
from mpibench.analysis.plots import FigureFile
from mpibench.analysis.profile import MIN_EFFECT_PCT, SERIES
from mpibench.analysis.rawstats import DRIFT_MIN_PCT
from mpibench.analysis.scaling import describe
from mpibench.analysis.table import (ENERGY_OK, KEY, col, config_of, constant_columns, converged,
                                     energy_measured, fmt, generated, group_rows, label, present)
from mpibench.errors import UsageError
from mpibench.stats import PHASES

FIGURES = (*figures.ALL, figures_scaling.by_ranks, figures_scaling.by_nodes)
#: Fractions of peak shown: against the datasheet or instruction-set estimate, and the measured GEMM peak.
MFU = ("mfu", "mfu_measured")
#: Hosts listed one by one in the report; a larger cluster is summarised.
MAX_HOSTS = 32


def write_all(a: Analysis, out: Path) -> list[Path]:
    """Every output file of the analysis, written into `out`; returns their paths."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mpibench-write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out: cannot write to {str(out)!r} ({err.strerror}); "
                         "choose another directory") from None
    made = [f for f in (fig(a, out) for fig in FIGURES) if f is not None]
    blocks = build(a, made)
    title = f"mpibench report: {a.run.path.name}"
    (out / "report.md").write_text(D.to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(D.to_html(blocks, title, out), encoding="utf-8")
    (out / "optimal.json").write_text(json.dumps(optimal_json(a), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return [out / "report.md", out / "report.html", out / "optimal.json", *(f.path for f in made)]


def build(a: Analysis, made: list[FigureFile]) -> list:
    blocks: list = [D.Heading(f"mpibench report: {a.run.path.name}", 1), D.Para(headline(a))]
    if not a.run.complete:
        blocks.append(D.Para(_incomplete(a)))
    blocks += _facts(a) + _recommendation(a) + _results(a) + _generation(a)
    blocks += contrasts.section(a.tasks, a.rows, a.windowed)
    blocks += _profile(a) + _excluded(a) + _quality(a)
    blocks += _scaling(a)
    blocks.append(D.Heading("Figures"))
    for f in made:
        blocks += [D.Heading(f.title, 3), D.Image(Path(f.path.name), f.title, f.caption)]
    return blocks + _method(a) + _appendix(a)


def headline(a: Analysis) -> str:
    t = a.tasks
    n_ok = int(np.sum(t["why_ineligible"][a.rows] == "")) if len(a.rows) else 0
    parts = [f"{len(a.rows)} configurations measured, {n_ok} of them usable for a recommendation."]
    for r in a.optimal["throughput"]["overall"]:
        if r["batch_size"] is not None:
            parts.append(f"**Recommended for throughput: {label(r)}** — {fmt(r['value'])} samples/s "
                         f"(95 % CI {fmt(r['ci_low'])}–{fmt(r['ci_high'])}).")
        else:
            parts.append(f"No throughput recommendation: {r['reason']}.")
    return " ".join(parts)


def _incomplete(a: Analysis) -> str:
    text = (f"**The run did not complete**: the job was killed or interrupted, or was still running when the "
            f"file was read. The file holds {len(a.tasks.get('task_id', []))} task rows.")
    if a.run.missing:
        names = ", ".join(label(m) for m in a.run.missing[:20])
        more = f" and {len(a.run.missing) - 20} more" if len(a.run.missing) > 20 else ""
        text += f" {len(a.run.missing)} planned configurations have no result: {names}{more}."
    return text


def _facts(a: Analysis) -> list:
    at, hosts, t = a.run.attrs, a.run.hosts, a.tasks
    versions = a.run.package_versions()
    facts = [("file", str(a.run.path)), ("mpibench", f"{at.get('mpibench_version', '?')} (schema "
                                                      f"{at.get('schema_version', '?')})"),
             ("started / ended", f"{at.get('start_time', '?')} / {at.get('end_time', '—')}"),
             ("complete", "yes" if a.run.complete else "**no**"),
             ("MPI", f"{at.get('world_size', '?')} ranks ({at.get('n_workers', '?')} measuring); "
                     f"{str(at.get('mpi_library_version', '?')).split(',')[0]}"),
             ("hosts", str(len(hosts.get("host", [])))),
             ("devices", _devices(t)),
             ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"),
             ("command", f"`{at.get('command_line', '?')}`")]
    for k in ("slurm_job_id", "slurm_job_partition", "slurm_job_nodelist"):
        if k in at:
            facts.append((k.replace("_", " "), str(at[k])))
    blocks = [D.Heading("Run"), D.Table(["", ""], [list(f) for f in facts], align="ll")]
    n = len(hosts.get("host", []))
    if n:
        shown = min(n, MAX_HOSTS)
        rows = [[str(hosts["host"][i]), str(col(hosts, "cpu_model", "")[i]), str(col(hosts, "cores", "")[i]),
                 fmt(col(hosts, "memory_gib")[i], 3), _gpus(col(hosts, "gpus", "[]")[i]),
                 str(col(hosts, "ranks", "")[i]), _gemm(col(hosts, "gemm_tflops", "{}")[i])] for i in range(shown)]
        blocks.append(D.Table(["host", "CPU", "cores", "memory (GiB)", "GPUs", "ranks", "GEMM peak (TFLOP/s)"],
                              rows, align="llrrlll"))
        if n > shown:
            blocks.append(D.Para(f"… and {n - shown} more hosts (all of them are in the file's /hosts)."))
    return blocks


def _devices(t: dict) -> str:
    """`cpu: Xeon ...; cuda:0: H100 ...`: each planned device and what the ranks found there."""
    device, name = col(t, "device", "").astype(str), col(t, "device_name", "").astype(str)
    return "; ".join(f"{d}: {', '.join(sorted(set(name[device == d]) - {''})) or '?'}"
                     for d in sorted(set(device))) or "—"


def _gpus(text: str) -> str:
    try:
        gpus = json.loads(text or "[]")
    except ValueError:
        return str(text)
    names = Counter(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus)
    return ", ".join(f"{n} × {name}" if n > 1 else name for name, n in names.items()) or "—"


def _gemm(text: str) -> str:
    """`cpu (2 threads): fp32 0.26, bf16 0.14; cuda:0: ...` from a host's measured GEMM peaks."""
    try:
        peaks = json.loads(text or "{}")
        return "; ".join(
            f"{device}" + (f" ({p['threads']} threads)" if "threads" in p else "") + ": "
            + ", ".join(f"{k} {fmt(v, 3) if v is not None else '—'}" for k, v in p.items() if k != "threads")
            for device, p in peaks.items()) or "—"
    except (ValueError, TypeError, AttributeError):
        return str(text)


def _recommendation(a: Analysis) -> list:
    rows, notes = [], []
    for obj in OBJECTIVES:
        for scope, recs in (("per device", a.optimal[obj]["per_device"]), ("overall", a.optimal[obj]["overall"])):
            if scope == "overall" and len(a.optimal[obj]["per_device"]) <= 1:
                continue  # one device: the overall answer is the same
            for r in recs:
                where = r["device"] if scope == "per device" else "all devices"
                if r["batch_size"] is None:
                    rows.append([_objective(obj, a), where, "—", "—", "—"])
                    notes.append(f"**{obj}** ({where}): {r['reason']}.")
                    continue
                ci = "" if obj == "energy" else f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
                ties = ", ".join(f"bs={x['batch_size']} {x['precision']}" for x in r["tied_with"]) or "—"
                rows.append([_objective(obj, a), where, f"**{label(r, ('model',))}**",
                             f"{fmt(r['value'])}{ci} {r['unit']}", ties])
                notes.append(f"**{obj}** ({where}): {r['reason']}.")
    return [D.Heading("Recommendation"),
            D.Table(["objective", "scope", "configuration", "value [95 % CI]", "tied with (cheaper one chosen)"],
                    rows, align="lllrl"),
            D.Bullets(notes)]


def _objective(obj: str, a: Analysis) -> str:
    if obj == "latency":
        return f"latency (p99 ≤ {a.latency_slo_ms:g} ms, then throughput)" if a.latency_slo_ms is not None \
            else "latency (lowest p99)"
    if obj == "tokens":
        return "output tokens/s" + (f" (TPOT ≤ {a.tpot_slo_ms:g} ms)" if a.tpot_slo_ms is not None else "")
    return {"throughput": "throughput", "energy": "energy (J/sample)"}[obj]


def _windows_note(t: dict, rows: np.ndarray) -> str:
    """What --repeats did to the figures, with how far the windows' medians spread."""
    windows = col(t, "windows", 1)[rows].astype(float)
    if not np.any(windows > 1):
        return ""
    spread = col(t, "window_spread")[rows].astype(float)
    spread = spread[np.isfinite(spread)]
    return (f" Each configuration was measured in up to {int(np.max(windows))} windows (--repeats), interleaved in a "
            "random order over the sweep: its p50 is the mean of the windows' medians and its 95 % CI covers the "
            "drift between them (Student's t over the windows, never narrower than one window's own); p99 and "
            "J/sample are the windows' means. A difference is called significant, and an anomaly flagged, only "
            "where every window shows it on its own. The windows' medians spread by "
            f"{fmt(100 * np.median(spread), 2)} % (median over configurations; max / min - 1), at most "
            f"{fmt(100 * np.max(spread), 2)} %.")


def _results(a: Analysis) -> list:
    t = a.tasks
    has_energy = bool(np.any(energy_measured(t)))
    has_mfu = any(bool(np.any(np.isfinite(col(t, c)[a.rows].astype(float)))) for c in MFU)
    blocks = [D.Heading("Results per device and precision"),
              D.Para("Throughput is samples/s from the median end-to-end latency, with its 95 % CI; p50/p99 are "
                     "per batch; phase shares are of the mean end-to-end time; \"vs previous\" compares the "
                     "per-sample latency with the next smaller batch size (* = 95 % CIs apart)."
                     + (" MFU is the forward pass's model FLOP/s over the device's peak: the datasheet or "
                        "instruction-set estimate, and the GEMM peak the node measured at start." if has_mfu else "")
                     + _windows_note(t, a.rows))]
    header = ["batch", "throughput (samples/s) [95 % CI]", "p50 (ms)", "p99 (ms) [95 % CI]", "ms/sample",
              "vs previous", *(f"{p} %" for p in PHASES), *(["J/sample"] if has_energy else []),
              *(["MFU % (estimate / measured)"] if has_mfu else []), "notes"]
    return blocks + _tables_per_series(t, a.rows, header, lambda i: _result_row(t, i, has_energy, has_mfu))


def _tables_per_series(t: dict, rows: np.ndarray, header: list[str], row) -> list:
    """One table per device, precision and series (heading `cpu · fp32 (…)`), `row(i)` giving each row's cells."""
    by = present(t, ("device", "precision", *SERIES))
    omit = ("device", "precision", "batch_size") + constant_columns(t)
    blocks = []
    for idx in group_rows(t, by, rows).values():
        cfg = config_of(t, idx[0])
        extra = label(cfg, omit)
        blocks.append(D.Heading(f"{cfg['device']} · {cfg['precision']}" + (f" ({extra})" if extra else ""), 3))
        blocks.append(D.Table(header, [row(i) for i in idx], align="l" + "r" * (len(header) - 2) + "l"))
    return blocks


def _generation(a: Analysis) -> list:
    """Generation's token figures, one table per device and precision."""
    t = a.tasks
    rows = generated(t, a.rows[t["status"][a.rows] == "ok"])
    if len(rows) == 0:
        return []
    header = ["batch", "output tokens/s [95 % CI]", "TTFT p50 (ms) [95 % CI]", "TPOT (ms) [95 % CI]",
              "ITL p99 (ms)", "prefill tokens/s", "J/token", "decode GB/s", "MBU %", "notes"]
    blocks = [D.Heading("Generation"),
              D.Para("Output tokens/s is batch size x new tokens over the median request latency (a server's: the "
                     "tokens it delivered per second); TTFT runs to the prefill that gives the first token (a "
                     "server's: from each request's arrival); TPOT is the mean decode step after it, ITL one "
                     "decode step. Decode GB/s is the weights and KV cache a step reads over the TPOT; MBU its "
                     "fraction of the device's datasheet bandwidth."
                     + (f" The tokens objective holds TPOT ≤ {a.tpot_slo_ms:g} ms." if a.tpot_slo_ms else ""))]
    return blocks + _tables_per_series(t, rows, header, lambda i: [
        str(t["batch_size"][i]),
        _with_ci(col(t, "output_tokens_per_s")[i], col(t, "output_tokens_ci_low_per_s")[i],
                 col(t, "output_tokens_ci_high_per_s")[i]),
        _with_ci(col(t, "ttft_p50_ms")[i], col(t, "ttft_ci_low_ms")[i], col(t, "ttft_ci_high_ms")[i]),
        _with_ci(col(t, "tpot_mean_ms")[i], col(t, "tpot_ci_low_ms")[i], col(t, "tpot_ci_high_ms")[i]),
        fmt(col(t, "itl_p99_ms")[i]), fmt(col(t, "prefill_tokens_per_s")[i]), fmt(col(t, "j_per_token")[i]),
        fmt(col(t, "decode_gbs")[i]), fmt(col(t, "mbu")[i] * 100, 3), _notes(t, i)])


def _result_row(t: dict, i: int, has_energy: bool, has_mfu: bool = False) -> list[str]:
    e2e = sum(np.nan_to_num(col(t, f"{p}_mean_ms")[i]) for p in PHASES)
    shares = [f"{col(t, f'{p}_mean_ms')[i] / e2e * 100:.1f}" if e2e > 0 else "—" for p in PHASES]
    if t["status"][i] != "ok":
        cells = [str(t["batch_size"][i]), *["—"] * (5 + len(PHASES))]
    else:
        sig = "*" if t["vs_prev_significant"][i] else ""
        cells = [str(t["batch_size"][i]),
                 _with_ci(t["throughput_sps"][i], t["throughput_ci_low_sps"][i],
                          t["throughput_ci_high_sps"][i]),
                 fmt(t["e2e_p50_ms"][i]),
                 _with_ci(t["latency_p99_ms"][i], col(t, "p99_ci_low_ms")[i], col(t, "p99_ci_high_ms")[i]),
                 fmt(t["per_sample_ms"][i]),
                 f"{t['vs_prev_pct'][i]:+.1f} %{sig}" if np.isfinite(t["vs_prev_pct"][i]) else "", *shares]
    if has_energy:
        status = str(col(t, "energy_status", "")[i])
        cells.append(fmt(col(t, "j_per_sample")[i]) + (" (shared)" if status == "shared" else "")
                     if status in ENERGY_OK else "—")
    if has_mfu:
        cells.append(" / ".join(fmt(col(t, c)[i] * 100, 3) for c in MFU) if t["status"][i] == "ok" else "—")
    return cells + [_notes(t, i)]


def _with_ci(value, low, high) -> str:
    """`12.3 [12.1, 12.6]`, or the value alone where no CI was computed."""
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]" if not np.isnan(low) else fmt(value)


def _notes(t: dict, i: int) -> str:
    notes = []
    why = t["why_ineligible"][i]
    if why:
        msg = str(col(t, "message", "")[i])
        notes.append(f"**{why}**" + (f": {msg}" if msg and why != "did not converge" else ""))
    if t["anomaly"][i]:
        notes.append(f"{t['departure_pct'][i]:+.0f} % vs trend")
    if t["drift_significant"][i]:
        notes.append(f"drift {col(t, 'drift_pct')[i]:+.0f} %")
    return "; ".join(notes)


def _profile(a: Analysis) -> list:
    t = a.tasks
    blocks = [D.Heading("Batch profile")]
    items = []
    for idx in group_rows(t, present(t, SERIES), a.rows[t["status"][a.rows] == "ok"]).values():
        idx = idx[np.isfinite(t["per_sample_ms"][idx])]
        if len(idx) < 2:
            continue
        best = idx[np.argmin(t["per_sample_ms"][idx])]
        k = list(idx).index(best)
        text = (f"{label(config_of(t, best), ('batch_size', 'model') + constant_columns(t))}: lowest per-sample "
                f"latency at batch size {t['batch_size'][best]} ({fmt(t['per_sample_ms'][best])} ms/sample)")
        if k > 0:
            prev = idx[k - 1]
            change = (t["per_sample_ms"][best] / t["per_sample_ms"][prev] - 1) * 100
            text += (f", {abs(change):.0f} % {'faster' if change < 0 else 'slower'} per sample than batch size "
                     f"{t['batch_size'][prev]} ("
                     + ("95 % CIs apart: significant" if t["vs_prev_significant"][best] else
                        "95 % CIs overlap: not significant") + ")")
        items.append(text)
    if items:
        blocks.append(D.Bullets(items))
    if a.anomalies:
        blocks.append(D.Para("Batch sizes whose per-sample latency departs from the trend of their neighbours "
                             f"(by ≥ {MIN_EFFECT_PCT:.0f} %, 95 % CIs apart):"))
        blocks.append(D.Bullets([f["text"] for f in a.anomalies]))
    else:
        blocks.append(D.Para(f"No batch size departs from the trend of its neighbours by ≥ "
                             f"{MIN_EFFECT_PCT:.0f} % with 95 % CIs apart: there is no batch anomaly in this run "
                             "(batch sizes with only one neighbour are not tested)."))
    return blocks


def _excluded(a: Analysis) -> list:
    t = a.tasks
    rows = [[label(config_of(t, i), ("model",)), str(t["why_ineligible"][i]), str(col(t, "message", "")[i])]
            for i in a.excluded]
    if not rows and not a.run.missing:
        return []
    blocks = [D.Heading("Never recommended")]
    if rows:
        blocks += [D.Para("These configurations failed, ran out of memory, were interrupted or did not converge; "
                          "they are shown in the tables but never chosen."),
                   D.Table(["configuration", "why", "message"], rows, align="lll")]
    if a.run.missing:
        names = ", ".join(label(m, ("model",)) for m in a.run.missing)
        blocks.append(D.Para(f"Planned but never measured: {names}."))
    return blocks


def _quality(a: Analysis) -> list:
    t = a.tasks
    items = []
    unconv = a.rows[(t["status"][a.rows] == "ok") & ~converged(t)[a.rows]]
    if len(unconv):
        items.append(f"{len(unconv)} configuration(s) stopped at max_time before the median's CI reached the "
                     "target: " + ", ".join(label(config_of(t, i), ("model",)) for i in unconv) + ".")
    for i in a.drifted:
        items.append(f"{label(config_of(t, i), ('model',))}: the median moved {col(t, 'drift_pct')[i]:+.1f} % "
                     "between the first and second half of the measurement (95 % CIs apart): warm-up may "
                     "not have finished, or the clock or a neighbour changed.")
    ok = a.rows[t["status"][a.rows] == "ok"]
    unbounded = int(np.sum(~np.isfinite(col(t, "p99_ci_high_ms")[ok]))) if "p99_ci_high_ms" in t else 0
    if unbounded:
        items.append(f"{unbounded} of {len(ok)} configurations ran too few iterations (fewer than ~700) for "
                     "a 95 % upper bound on their p99: treat those p99 values as indicative.")
    if not items:
        items.append(f"Every configuration converged; no drift of ≥ {DRIFT_MIN_PCT:.0f} % within a measurement.")
    return [D.Heading("Measurement quality"), D.Bullets(items)]


def _scaling(a: Analysis) -> list:
    if not a.scaling:
        return []
    s = a.run.scaling
    rows = [[str(col(s, "n_ranks", "")[i]), str(col(s, "n_nodes", "")[i]),
             label({k: s[k][i] for k in KEY if k in s}, constant_columns(s) + ("model",)) or "—",
             fmt(col(s, "aggregate_throughput_sps")[i]), fmt(col(s, "per_rank_throughput_sps")[i]),
             f"{col(s, 'efficiency')[i]:.0%}" if np.isfinite(col(s, "efficiency")[i]) else "—"]
            for i in range(len(s["n_ranks"]))]
    return [D.Heading("Scaling"), D.Bullets([describe(r) for r in a.scaling]),
            D.Table(["ranks", "nodes", "configuration", "aggregate (samples/s)", "per rank (samples/s)",
                     "efficiency"], rows, align="rrlrrr")]


def _method(a: Analysis) -> list:
    return [D.Heading("How the recommendation is made"), D.Bullets([
        "Throughput is batch size / median end-to-end latency; its 95 % CI follows from the median's "
        "distribution-free CI (order statistics), which the run computed from every iteration.",
        "Only configurations that ran, converged and measured a latency are candidates. Among candidates whose "
        "95 % CI overlaps the best one's, the cheapest is recommended: smaller batch, then lower latency, then "
        "fewer threads, then the more exact precision; the others are named as ties.",
        "Latency: with --latency-slo-ms, the configurations whose p99 meets the SLO, then highest throughput; "
        "otherwise the lowest p99. The p99's CI comes from the raw samples.",
        f"Energy: J/sample where a hardware counter measured the task; one reading per task, so readings within "
        f"{ENERGY_TIE:.0%} count as equal.",
        f"Batch anomaly: per-sample latency against the straight line (log-log) through the two neighbouring "
        f"batch sizes; flagged when the whole 95 % CI lies outside the neighbours' interpolated CIs and the "
        f"departure is at least {MIN_EFFECT_PCT:.0f} %.",
    ])]


def _appendix(a: Analysis) -> list:
    cfg = str(a.run.attrs.get("config_yaml", "")).strip()
    return [D.Heading("Configuration"), D.Code(cfg)] if cfg else []
