"""The /tasks table as analysis sees it: configuration keys, eligibility, throughput with its CI.

A table is what `mpibench.store.read_tasks` returns: {column: 1-D array}, one row per task. Functions
here take and return such column dicts (or row indices into them), so they work on a hand-built table
as well as on a file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Hashable

import numpy as np

from mpibench.stats import combine_windows
from mpibench.task import CORE, DIMENSIONS, format_label, with_role

#: What identifies a configuration: the sweep dimensions, declared once as the Task's fields.
KEY = DIMENSIONS
#: The workload: never traded for speed (a shorter sequence is always faster, and not the same job).
WORKLOAD = with_role("workload")
#: Which precision to prefer when two tie: the one that changes the model's numbers least.
PRECISION_RANK = {"fp32": 0, "bf16": 1, "fp16": 2}
#: Energy readings that measured the task's own window (a `shared` one covers the node).
ENERGY_OK = ("ok", "shared")


def n_rows(t: dict[str, np.ndarray]) -> int:
    return len(next(iter(t.values()))) if t else 0


def col(t: dict[str, np.ndarray], name: str, default=math.nan) -> np.ndarray:
    """A column, or `default` everywhere when a hand-built table lacks it."""
    if name in t:
        return np.asarray(t[name])
    return np.full(n_rows(t), default, dtype=object if isinstance(default, str) else None)


def generated(t: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Of `rows`, those that generated (--workload generate)."""
    return rows[col(t, "workload", "classify").astype(str)[rows] == "generate"]


def take(t: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[idx] for k, v in t.items()}


def converged(t: dict[str, np.ndarray]) -> np.ndarray:
    """The stopping rule was met, or did not apply: a scaling step measures a fixed window."""
    return col(t, "converged", True).astype(bool) | (col(t, "scaling_ranks", -1).astype(float) >= 1)


def why_ineligible(t: dict[str, np.ndarray]) -> np.ndarray:
    """Per row: "" when the row may be recommended, else why not (status, or did not converge)."""
    status = col(t, "status", "ok").astype(str)
    converged_ = converged(t)
    thr, _, _ = throughput_ci(t)
    out = np.where(status == "ok", "", status).astype(object)
    out[(status == "ok") & ~converged_] = "did not converge"
    out[(out == "") & ~np.isfinite(thr)] = "no latency measured"
    return out


def throughput_ci(t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """throughput_sps with its 95 % CI as the file states them (mpibench.stats: from the median latency;
    a server's: what it delivered); where a row has no CI, the point value."""
    t = with_figures(t)
    value = col(t, "throughput_sps").astype(float)
    low, high = col(t, "throughput_ci_low_sps").astype(float), col(t, "throughput_ci_high_sps").astype(float)
    return value, np.where(np.isnan(low), value, low), np.where(np.isnan(high), value, high)


def latency_p99(t: dict[str, np.ndarray]) -> np.ndarray:
    """The p99 each row is judged by: per batch, or per request for a server."""
    return col(with_figures(t), "latency_p99_ms").astype(float)


def with_figures(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A table from before schema 3 (throughput_sps was batch / mean, no latency_p99_ms), or a hand-built
    one, given the figures as they are defined now (mpibench.stats.summarize); others unchanged."""
    if "throughput_mean_sps" in t or "e2e_p50_ms" not in t:
        return t
    t = dict(t)
    server = col(t, "scenario", "offline").astype(str) == "server"
    bs = col(t, "batch_size").astype(float)
    old = col(t, "throughput_sps").astype(float)  # a server's was already its delivered rate
    ci_low, ci_high = col(t, "e2e_ci_low_ms").astype(float), col(t, "e2e_ci_high_ms").astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t["throughput_mean_sps"] = np.where(server, old, bs * 1e3 / col(t, "e2e_mean_ms").astype(float))
        t["throughput_sps"] = np.where(server, old, bs * 1e3 / col(t, "e2e_p50_ms").astype(float))
        t["throughput_ci_low_sps"] = np.where(server, math.nan, bs * 1e3 / ci_high)
        t["throughput_ci_high_sps"] = np.where(server, math.nan, np.where(ci_low > 0, bs * 1e3 / ci_low, math.inf))
    t["latency_p99_ms"] = np.where(server, col(t, "server_p99_ms").astype(float), col(t, "e2e_p99_ms").astype(float))
    return t


def present(t: dict, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of `names`, the core dimensions and whichever further columns the table has."""
    return tuple(k for k in names if k in CORE or k in t)


def key_columns(t: dict) -> tuple[str, ...]:
    return present(t, KEY)


def energy_measured(t: dict[str, np.ndarray]) -> np.ndarray:
    """Per row: a counter read the task's window (ENERGY_OK) and gave a finite J/sample."""
    return (np.isin(col(t, "energy_status", "").astype(str), ENERGY_OK)
            & np.isfinite(col(t, "j_per_sample").astype(float)))


def latest_per_config(t: dict[str, np.ndarray], by: tuple[str, ...] | None = None) -> np.ndarray:
    """One row per configuration (or per value of the `by` columns): its last eligible row, else its last
    row (a resumed run repeats)."""
    ok = why_ineligible(t) == ""
    best: dict[tuple, int] = {}
    columns = [col(t, k, "") for k in (key_columns(t) if by is None else by)]
    for i in range(n_rows(t)):
        key = tuple(_plain(c[i]) for c in columns)
        j = best.get(key)
        if j is None or ok[i] or not ok[j]:
            best[key] = i
    return np.array(sorted(best.values()), dtype=int)


#: The figures a configuration measured in several windows (--repeats) states for them all.
COMBINED = ("e2e_p50_ms", "e2e_ci_low_ms", "e2e_ci_high_ms", "throughput_sps", "throughput_ci_low_sps",
            "throughput_ci_high_sps", "throughput_mean_sps", "latency_p99_ms", "j_per_sample", "windows",
            "window_spread")


def window_rows(t: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per measurement window (--repeats: the `repeat` column): one row per configuration it measured."""
    repeat = col(t, "repeat", 0).astype(int)
    return [np.flatnonzero(repeat == r)[latest_per_config(take(t, repeat == r))]
            for r in sorted(set(repeat.tolist()))]


def per_configuration(t: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(table, rows): one row per configuration, and a table in which each of those rows states the
    configuration's figures.

    A configuration measured once keeps its row as it is. One measured in several windows (--repeats)
    gets, in the row of its last eligible window, the figures of all its windows that measured (status
    ok, converged or not; `converged` only if all did) combined
    (mpibench.stats.combine_windows: the mean of the windows' median latencies, a 95 % CI that covers the
    drift between them, the throughput they imply; the mean p99 and J/sample), `windows` (how many were
    combined) and `window_spread` (max / min of their medians - 1). Other rows keep their own figures.
    """
    t = with_figures(t)
    rows = latest_per_config(t)
    if "repeat" not in t or not np.any(col(t, "repeat", 0).astype(int) > 0):
        return t, rows
    ok = np.isin(why_ineligible(t), ("", "did not converge"))  # a window that ran out of time still measured
    keys = [col(t, k, "") for k in key_columns(t)]

    def config(i: int) -> tuple:
        return tuple(_plain(c[i]) for c in keys)

    chosen = {config(i): i for i in rows.tolist()}
    measured: dict[tuple, list[int]] = defaultdict(list)
    for i in latest_per_config(t, key_columns(t) + ("repeat",)).tolist():
        if ok[i]:
            measured[config(i)].append(i)
    for key, idx in measured.items():  # the chosen row states the figures, or the last window that measured
        if chosen[key] not in idx:
            chosen[key] = idx[-1]
    windows = {chosen[key]: idx for key, idx in measured.items()}
    rows = np.array(sorted(chosen.values()), dtype=int)
    t = {k: np.array(v, copy=True) for k, v in t.items()}
    for name in COMBINED:
        if name not in t:
            t[name] = np.full(n_rows(t), 1 if name == "windows" else math.nan)
    server = col(t, "scenario", "offline").astype(str) == "server"
    for row, idx in windows.items():
        idx = np.array(idx)
        if len(idx) < 2:
            continue
        bs = float(t["batch_size"][row])
        if server[row]:  # what the server delivered, window by window; no within-window CI
            rate = t["throughput_sps"][idx].astype(float)
            centre, lo, hi = combine_windows(rate, rate, rate)
            t["throughput_sps"][row], t["throughput_ci_low_sps"][row], t["throughput_ci_high_sps"][row] = centre, lo, hi
            t["throughput_mean_sps"][row] = centre
            medians = rate
        else:
            medians = t["e2e_p50_ms"][idx].astype(float)
            centre, lo, hi = combine_windows(medians, t["e2e_ci_low_ms"][idx], t["e2e_ci_high_ms"][idx])
            t["e2e_p50_ms"][row], t["e2e_ci_low_ms"][row], t["e2e_ci_high_ms"][row] = centre, lo, hi
            with np.errstate(divide="ignore"):
                t["throughput_sps"][row] = bs * 1e3 / centre
                t["throughput_ci_low_sps"][row] = bs * 1e3 / hi
                t["throughput_ci_high_sps"][row] = bs * 1e3 / lo if lo > 0 else math.inf
                t["throughput_mean_sps"][row] = float(np.mean(t["throughput_mean_sps"][idx].astype(float)))
        t["latency_p99_ms"][row] = float(np.mean(t["latency_p99_ms"][idx].astype(float)))
        t["j_per_sample"][row] = float(np.mean(t["j_per_sample"][idx].astype(float)))
        if "ttft_p50_ms" in t and np.isfinite(t["ttft_p50_ms"][row]):
            _combine_tokens(t, row, idx, server[row])
        if "converged" in t:  # recommended only if every window converged
            t["converged"][row] = bool(np.all(converged(take(t, idx))))
        t["windows"][row] = len(idx)
        t["window_spread"][row] = float(np.max(medians) / np.min(medians) - 1)
    return t, rows


#: Generation's figures with a CI, combined over windows as the median latency is.
TOKEN_FIGURES = (("ttft_p50_ms", "ttft_ci_low_ms", "ttft_ci_high_ms"),
                 ("tpot_mean_ms", "tpot_ci_low_ms", "tpot_ci_high_ms"))


def _combine_tokens(t: dict[str, np.ndarray], row: int, idx: np.ndarray, server: bool) -> None:
    """A generation configuration's windows: TTFT and TPOT as combine_windows combines medians, output
    tokens/s from the combined request latency (a server's: the mean of what it delivered), the means of
    the rest."""
    for name, lo, hi in TOKEN_FIGURES:
        if lo in t:
            t[name][row], t[lo][row], t[hi][row] = combine_windows(t[name][idx], t[lo][idx], t[hi][idx])
    tokens = float(col(t, "new_tokens", 0)[row]) * float(t["batch_size"][row]) * 1e3
    if server or not tokens:
        t["output_tokens_per_s"][row] = float(np.mean(t["output_tokens_per_s"][idx].astype(float)))
    elif "output_tokens_ci_low_per_s" in t:
        e2e, lo, hi = t["e2e_p50_ms"][row], t["e2e_ci_low_ms"][row], t["e2e_ci_high_ms"][row]
        t["output_tokens_per_s"][row], t["output_tokens_ci_low_per_s"][row] = tokens / e2e, tokens / hi
        t["output_tokens_ci_high_per_s"][row] = tokens / lo if lo > 0 else math.inf
    for name in ("ttft_p99_ms", "j_per_token", "prefill_tokens_per_s"):
        if name in t:
            t[name][row] = float(np.mean(t[name][idx].astype(float)))


def in_every_window(full: dict[str, np.ndarray], found: list, find: Callable[[dict], list],
                    key: Callable[[Any], Hashable] = lambda f: f) -> list:
    """Of the verdicts `found` on the combined figures, those that `find` reaches again on every
    measurement window's own table (--repeats): a finding must not rest on one window. `full` holds every
    window's rows with their own figures; `key` says which verdicts are the same."""
    windows = window_rows(full)
    if len(windows) < 2:
        return found
    held = {key(f) for f in found}
    for rows in windows:
        held &= {key(f) for f in find(take(full, rows))}
    return [f for f in found if key(f) in held]


def group_rows(t: dict[str, np.ndarray], by: tuple[str, ...], rows=None) -> dict[tuple, np.ndarray]:
    """Row indices by the values of the `by` columns, groups and rows in sorted order."""
    rows = np.arange(n_rows(t)) if rows is None else np.asarray(rows)
    groups: dict[tuple, list[int]] = defaultdict(list)
    columns = [col(t, k, "") for k in by]
    for i in rows.tolist():
        groups[tuple(_plain(c[i]) for c in columns)].append(i)
    out = {}
    for key in sorted(groups, key=_sort_key):
        idx = np.array(groups[key], dtype=int)
        out[key] = idx[np.lexsort((col(t, "threads", 0)[idx], col(t, "batch_size", 0)[idx]))]
    return out


def _sort_key(key: tuple) -> tuple:
    return tuple((-1, "") if v is None else (PRECISION_RANK.get(v, 9), v) if isinstance(v, str) else (0, v)
                 for v in key)


def _plain(v):
    """A plain Python value; NaN (a column an older row never filled) becomes None, which compares equal."""
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and math.isnan(v) else v


def config_of(t: dict[str, np.ndarray], i: int) -> dict:
    """The configuration of row i as plain Python values."""
    return {k: _plain(col(t, k, "")[i]) for k in key_columns(t)}


def label(cfg: dict, omit: tuple[str, ...] = ()) -> str:
    """`cpu fp32 bs=4 seq=128 threads=2`, leaving out what the context already says (and defaults)."""
    return format_label(cfg, omit)


def constant_columns(t: dict[str, np.ndarray], names=KEY) -> tuple[str, ...]:
    """The key columns that have one value in the whole table (so labels can leave them out)."""
    return tuple(k for k in names if k in t and len(set(np.asarray(t[k]).tolist())) <= 1)


def fmt(v, digits: int = 4) -> str:
    """A number for people: 4 significant digits, no exponent for large values, ∞ for unknown bounds."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"
