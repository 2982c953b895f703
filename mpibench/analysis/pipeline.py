"""One run analysed: the loaded file, its batch profile, the optimum per objective, scaling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpibench.analysis import scaling as scaling_mod
from mpibench.analysis.load import Run, load_run
from mpibench.analysis.optimum import OBJECTIVES, choose_optimal
from mpibench.analysis.profile import batch_profile
from mpibench.analysis.table import (config_of, in_every_window, key_columns, per_configuration, take, throughput_ci,
                                     why_ineligible)


@dataclass
class Analysis:
    run: Run
    tasks: dict[str, np.ndarray]  # /tasks + raw statistics + batch profile + derived columns
    rows: np.ndarray  # one row per configuration (table.per_configuration), its figures in `tasks`
    anomalies: list[dict]
    optimal: dict[str, dict[str, list[dict]]]  # objective -> {"per_device": [...], "overall": [...]}
    latency_slo_ms: float | None = None
    scaling: list[dict] = field(default_factory=list)
    tpot_slo_ms: float | None = None
    windowed: dict[str, np.ndarray] = field(default_factory=dict)  # every window's rows, their own figures

    def recommended(self, objective: str = "throughput") -> list[dict]:
        return [r for r in self.optimal[objective]["per_device"] if r["batch_size"] is not None]

    @property
    def recommended_rows(self) -> list[int]:
        """Rows of every configuration recommended for any objective (figures show these first)."""
        ids = {r["task_id"] for obj in self.optimal.values() for recs in obj.values() for r in recs
               if r["task_id"] is not None}
        return [int(i) for i in self.rows if int(self.tasks["task_id"][i]) in ids]

    @property
    def excluded(self) -> np.ndarray:
        """Configuration rows that can never be recommended."""
        return self.rows[self.tasks["why_ineligible"][self.rows] != ""]

    @property
    def drifted(self) -> np.ndarray:
        return self.rows[self.tasks["drift_significant"][self.rows].astype(bool)]


def analyze(path: str | Path, latency_slo_ms: float | None = None, tpot_slo_ms: float | None = None,
            **load_kw) -> Analysis:
    """Everything the report, the figures and optimal.json need, from one pass over the file."""
    run = load_run(path, **load_kw)
    t = dict(run.tasks)
    if "scaling_ranks" in t:  # rows measured with other ranks at once belong to the scaling study
        t = take(t, np.asarray(t["scaling_ranks"]) <= 1)
    if "drift_significant" not in t:  # a file without raw samples
        t["drift_significant"] = np.zeros(len(t.get("task_id", [])), dtype=bool)
    windowed = t  # with --repeats, every window's rows with their own figures
    t, rows = per_configuration(t)  # nothing added below changes it: it reads key, status and latency columns
    profile, anomalies = batch_profile(t, rows)
    anomalies = _in_every_window(windowed, t, profile, anomalies)
    t.update(profile)
    t["throughput_sps"], t["throughput_ci_low_sps"], t["throughput_ci_high_sps"] = throughput_ci(t)
    t["why_ineligible"] = why_ineligible(t)
    optimal = {obj: {per: choose_optimal(t, obj, latency_slo_ms, per=p, rows=rows, tpot_slo_ms=tpot_slo_ms)
                     for per, p in (("per_device", "device"), ("overall", "overall"))}
               for obj in OBJECTIVES}
    scaling = scaling_mod.summary(run.scaling) if run.scaling is not None else []
    return Analysis(run, t, rows, anomalies, optimal, latency_slo_ms, scaling, windowed=windowed,
                    tpot_slo_ms=tpot_slo_ms)


def _in_every_window(windowed: dict, t: dict, profile: dict, anomalies: list[dict]) -> list[dict]:
    """The anomalies, and the significant changes from one batch size to the next, that every measurement
    window shows on its own (--repeats: table.in_every_window); the others are withdrawn, from `profile` too."""
    def verdicts(table: dict, p: dict) -> list[tuple]:
        return [(v, *k) for v in ("anomaly", "vs_prev_significant") for k in _keys(table, p, v)]

    held = set(in_every_window(windowed, verdicts(t, profile), lambda w: verdicts(w, batch_profile(w)[0])))
    for i in np.flatnonzero(profile["anomaly"] != ""):
        if ("anomaly", *_key(t, profile, i, "anomaly")) not in held:
            profile["anomaly"][i] = ""
    for i in np.flatnonzero(profile["vs_prev_significant"]):
        if ("vs_prev_significant", *_key(t, profile, i, "vs_prev_significant")) not in held:
            profile["vs_prev_significant"][i] = False
    return [f for f in anomalies if ("anomaly", *(f[k] for k in key_columns(t)), f["kind"]) in held]


def _key(t: dict, profile: dict, i: int, verdict: str) -> tuple:
    """Row i's configuration and its verdict: the kind of anomaly, or which way the change went."""
    how = profile["anomaly"][i] if verdict == "anomaly" else bool(profile["vs_prev_pct"][i] < 0)
    return tuple(config_of(t, i).values()) + (how,)


def _keys(t: dict, profile: dict, verdict: str) -> set[tuple]:
    return {_key(t, profile, i, verdict) for i in np.flatnonzero(profile[verdict] != "" if verdict == "anomaly"
                                                               else profile[verdict])}


def to_json(value):
    """JSON-safe: NaN and infinities (unknown bounds) become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def optimal_json(a: Analysis) -> dict:
    return to_json({
        "file": str(a.run.path), "complete": a.run.complete, "latency_slo_ms": a.latency_slo_ms,
        "objectives": a.optimal,
        "notes": {"throughput": "samples/s from the median end-to-end latency; CI from the median's 95 % CI",
                  "ties": "configurations whose CI overlaps the best one's tie; the cheapest tied one is "
                          "recommended (smaller batch, lower latency)",
                  "null": "null bounds are unknown (too few iterations) or not measured"},
    })
