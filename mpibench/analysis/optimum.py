"""The recommended configuration for an objective, chosen so that the claim holds up.

Rules, in order:
1. Only configurations that ran, converged and measured a latency are candidates; every other one is
   listed with the reason it was left out. The workload (model, seq_len) is never traded: there is one
   recommendation per device and workload (`per="device"`) or per workload over all devices
   (`per="overall"`).
2. The best candidate by the objective's value is found:
   - `throughput`: samples/s from the median latency, 95 % CI from the median's CI (highest wins);
   - `latency`: with an SLO, the candidates whose p99 is at most the SLO, then highest throughput;
     without one, the lowest p99 (its CI from the raw samples where the table has one);
   - `energy`: J/sample where a counter measured it (no CI exists: one reading per task, so values
     within ENERGY_TIE of the best count as equal);
   - `tokens` (generation only): output tokens/s with its CI, with a TPOT SLO among the candidates whose
     time per output token is at most the SLO.
3. Every candidate whose CI overlaps the best one's ties with it; among the tied, the cheapest wins:
   smaller batch, then lower latency, then fewer threads, then the precision that changes the
   numbers least. The answer names the others it tied with.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from mpibench.analysis.table import (KEY, PRECISION_RANK, WORKLOAD, col, config_of, energy_measured, fmt, generated,
                                     group_rows, label, latency_p99, n_rows, per_configuration, present,
                                     throughput_ci, why_ineligible)

OBJECTIVES = ("throughput", "latency", "energy", "tokens")
UNITS = {"throughput": "samples/s", "latency": "ms", "energy": "J/sample", "tokens": "tokens/s"}
#: Relative difference within which two energy readings count as equal (they carry no CI).
ENERGY_TIE = 0.05
_PER = {"device": ("device", *WORKLOAD), "overall": WORKLOAD}  # of these, the columns a table has


def choose_optimal(tasks: dict[str, np.ndarray], objective: str = "throughput",
                   latency_slo_ms: float | None = None, per: str = "device", rows=None,
                   tpot_slo_ms: float | None = None) -> list[dict]:
    """The recommended configuration(s): one dict per device (per device and workload when the run
    swept several models or sequence lengths), or per workload with per="overall".

    Keys: device, precision, batch_size, seq_len, threads, model, objective, value, unit, ci_low,
    ci_high, tied_with (the configurations it tied with, each with value and CI), reason, excluded
    (configurations that could not be chosen and why), task_id, throughput_sps, p99_ms. When nothing
    can be chosen the configuration keys are None, value is NaN and reason says why.

    `rows`: one row per configuration, `tasks` stating their figures (table.per_configuration, which is the
    default: a caller that has them saves a pass).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if per not in _PER:
        raise ValueError(f"per {per!r}; allowed: {', '.join(_PER)}")
    if not n_rows(tasks):
        return []
    if rows is None:
        tasks, rows = per_configuration(tasks)
    if objective == "tokens":  # generation's rows only; its bound is the time per output token
        rows = generated(tasks, rows)
    slo = tpot_slo_ms if objective == "tokens" else latency_slo_ms
    by = present(tasks, _PER[per])
    why, m = _why_not(tasks, objective), _metric(tasks, objective, slo)
    thr = throughput_ci(tasks)[0]
    return [_choose(tasks, idx, objective, slo, dict(zip(by, key)), why, m, thr)
            for key, idx in group_rows(tasks, by, rows).items()]


@dataclass
class _Metric:
    """What is optimised: a value with CI bounds; `fallback` judges ties where the bounds are unknown."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    higher_is_better: bool
    unit: str
    fallback: tuple[np.ndarray, np.ndarray] | None = None

    def best(self, cand: np.ndarray) -> int:
        v = self.value[cand]
        return int(cand[np.argmax(v) if self.higher_is_better else np.argmin(v)])

    def ties(self, i: int, j: int) -> bool:
        lo, hi = self.lo, self.hi
        if self.fallback is not None and not np.isfinite([lo[i], hi[i], lo[j], hi[j]]).all():
            lo, hi = self.fallback
        return bool(hi[i] >= lo[j] and lo[i] <= hi[j])


def _metric(t: dict, objective: str, slo: float | None) -> _Metric:
    if objective == "throughput" or (objective == "latency" and slo is not None):
        return _Metric(*throughput_ci(t), True, UNITS["throughput"])
    if objective == "latency":  # a p99's CI needs ~700 samples (and the raw ones); else ties follow the median's
        return _Metric(latency_p99(t), col(t, "p99_ci_low_ms"), col(t, "p99_ci_high_ms"),
                       False, "ms", (col(t, "e2e_ci_low_ms"), col(t, "e2e_ci_high_ms")))
    if objective == "tokens":
        return _Metric(col(t, "output_tokens_per_s"), col(t, "output_tokens_ci_low_per_s"),
                       col(t, "output_tokens_ci_high_per_s"), True, UNITS["tokens"])
    jps = col(t, "j_per_sample").astype(float)
    return _Metric(jps, jps * (1 - ENERGY_TIE), jps * (1 + ENERGY_TIE), False, "J/sample")


#: The objectives an SLO bounds: the column held to it and its name.
_BOUND = {"latency": (latency_p99, "p99"), "tokens": (lambda t: col(t, "tpot_mean_ms"), "TPOT")}


def _why_not(t: dict, objective: str) -> np.ndarray:
    why = why_ineligible(t)
    if objective == "energy":
        why = np.where((why == "") & ~energy_measured(t), "energy not measured", why)
    if objective == "tokens":
        why = np.where((why == "") & ~np.isfinite(col(t, "output_tokens_per_s").astype(float)),
                       "no tokens/s measured", why)
    return why


def _choose(t: dict, idx: np.ndarray, objective: str, slo: float | None, scope: dict, why: np.ndarray,
            m: _Metric, thr: np.ndarray) -> dict:
    """One scope's recommendation; `why` (_why_not), `m` (_metric) and `thr` (throughput) cover the table."""
    omit = tuple(scope) + ("model",)
    excluded = [{**config_of(t, i), "why": str(why[i])} for i in idx if why[i]]
    cand = idx[why[idx] == ""]
    if objective in _BOUND and slo is not None and len(cand):
        meets = cand[_BOUND[objective][0](t)[cand] <= slo]
        if len(meets) == 0:
            return _nothing(scope, objective, excluded, _slo_missed(t, cand, slo, omit, objective))
        cand = meets
    if len(cand) == 0:
        return _nothing(scope, objective, excluded, _why_none(objective, excluded, idx))
    best = m.best(cand)
    tied = [int(i) for i in cand if m.ties(int(i), best)]
    chosen = min(tied, key=lambda i: _cost(t, i))
    others = [i for i in tied if i != chosen]
    out = {**config_of(t, chosen), "objective": objective, "value": float(m.value[chosen]), "unit": m.unit,
           "ci_low": float(m.lo[chosen]), "ci_high": float(m.hi[chosen]),
           "tied_with": [{**config_of(t, i), "value": float(m.value[i]), "ci_low": float(m.lo[i]),
                          "ci_high": float(m.hi[i])} for i in others],
           "excluded": excluded, "task_id": int(col(t, "task_id", -1)[chosen]),
           "throughput_sps": float(thr[chosen]), "p99_ms": float(latency_p99(t)[chosen])}
    out["reason"] = _reason(t, m, out, chosen, best, others, objective, slo, omit)
    return out


def _cost(t: dict, i: int) -> tuple:
    """Cheaper sorts first: smaller batch, lower latency, fewer threads, the more exact precision."""
    return (int(t["batch_size"][i]), float(col(t, "e2e_p50_ms")[i]), int(col(t, "threads", 0)[i]),
            PRECISION_RANK.get(str(t["precision"][i]), 9))


def _reason(t, m, out, chosen, best, others, objective, slo, omit) -> str:
    unit = out["unit"]
    what = {"throughput": "highest throughput", "energy": "lowest energy per sample",
            "latency": (f"highest throughput with p99 ≤ {slo:g} ms" if slo is not None
                        else "lowest p99 latency"),
            "tokens": "highest output tokens/s" + (f" with TPOT ≤ {slo:g} ms" if slo is not None else "")}[objective]
    if objective == "energy":
        ci = f"no CI: one energy reading per task; readings within {ENERGY_TIE:.0%} count as equal"
    elif objective == "latency" and slo is None and "p99_ci_low_ms" not in t:
        ci = "no CI: the table alone has none for the p99; the analysis of the file adds it"
    else:
        ci = f"95 % CI {fmt(out['ci_low'])}–{fmt(out['ci_high'])}"
    text = f"{what}: {label(config_of(t, chosen), omit)} at {fmt(out['value'])} {unit} ({ci})"
    if objective == "latency" and slo is not None:
        text += f"; p99 {fmt(latency_p99(t)[chosen])} ms"
        hi = float(col(t, "p99_ci_high_ms")[chosen])
        if np.isinf(hi):
            text += " (too few iterations for a 95 % upper bound on the p99)"
        elif hi > slo:
            text += f" (marginal: the p99's 95 % upper bound, {fmt(hi)} ms, is above the SLO)"
    if objective == "tokens":
        text += f"; TPOT {fmt(col(t, 'tpot_mean_ms')[chosen])} ms, TTFT {fmt(col(t, 'ttft_p50_ms')[chosen])} ms"
        hi = float(col(t, "tpot_ci_high_ms")[chosen])
        if slo is not None and hi > slo:
            text += f" (marginal: the TPOT's 95 % upper bound, {fmt(hi)} ms, is above the SLO)"
    if others:
        names = ", ".join(label(config_of(t, i), omit) for i in others)
        if objective == "energy":
            how = f"within {ENERGY_TIE:.0%}"
        elif objective == "latency" and slo is None:
            how = "overlapping 95 % CIs; the median's where a p99 has no bound"
        else:
            how = "overlapping 95 % CIs"
        text += f"; ties with {names} ({how}), so the cheaper one is recommended (smaller batch, lower latency)"
        if chosen != best:
            text += (f"; the best point estimate was {label(config_of(t, best), omit)} at "
                     f"{fmt(m.value[best])} {unit}")
    return text + _never_chosen(out["excluded"], omit)


def _never_chosen(excluded: list[dict], omit: tuple[str, ...], limit: int = 6) -> str:
    """The left-out configurations by name, or counted by reason when there are many."""
    if not excluded:
        return ""
    if len(excluded) <= limit:
        return "; never chosen: " + ", ".join(f"{label(e, omit)} ({e['why']})" for e in excluded)
    counts = Counter(e["why"] for e in excluded)
    return (f"; never chosen: {len(excluded)} configurations ("
            + ", ".join(f"{n} {why}" for why, n in counts.most_common()) + ")")


def _slo_missed(t, cand, slo, omit, objective: str = "latency") -> str:
    column, name = _BOUND[objective]
    values = column(t)
    i = cand[np.argmin(values[cand])]
    return (f"no configuration meets {name} ≤ {slo:g} ms; the lowest {name} is {fmt(values[i])} ms "
            f"({label(config_of(t, i), omit)})")


def _why_none(objective: str, excluded: list[dict], idx) -> str:
    if objective == "energy" and all(e["why"] == "energy not measured" for e in excluded):
        return ("energy was not measured on any configuration (no readable RAPL/NVML counters on the "
                "machine that ran them), so no energy recommendation can be made")
    reasons = sorted({e["why"] for e in excluded})
    return f"none of the {len(idx)} configurations can be chosen ({', '.join(reasons)})"


def _nothing(scope: dict, objective: str, excluded: list[dict], reason: str) -> dict:
    empty = {k: None for k in KEY}
    return {**empty, **scope, "objective": objective, "value": math.nan, "unit": UNITS[objective],
            "ci_low": math.nan, "ci_high": math.nan, "tied_with": [], "excluded": excluded,
            "task_id": None, "throughput_sps": math.nan, "p99_ms": math.nan, "reason": reason}
