"""Two runs side by side: what changed per configuration, and whether the change is real.

Configurations match on (model, device, precision, batch_size, seq_len, threads). The compared figure
is the throughput from the median latency. A change is significant when the two 95 % CIs do not
overlap (conservative: two non-overlapping 95 % intervals mean p < 0.01 for the difference). It is a
regression when it is significant and throughput fell by more than the threshold. Generation's rows also
show how their time to first token and time per output token changed (* where the CIs are apart); the
verdict stays with throughput (for generation, output tokens/s changes by the same percentage).

The gate fails closed: a configuration usable in the base run (ok, with a throughput) that the new run
did not measure as usable is a failure too, whether it now fails (failed, oom), was unavailable or
interrupted, or is missing from the new run altogether (also from a new run without rows). New
configurations, and those not usable in the base run, are listed and never decide the verdict.
"""

from __future__ import annotations

import math

import numpy as np

from mpibench.analysis.table import (col, config_of, converged, key_columns, label, latency_p99, per_configuration,
                                     throughput_ci)

FAILING = ("failed", "oom")
#: Generation's figures whose change is shown: (value, CI low, CI high) columns.
TOKEN_CHANGES = {"ttft": ("ttft_p50_ms", "ttft_ci_low_ms", "ttft_ci_high_ms"),
                 "tpot": ("tpot_mean_ms", "tpot_ci_low_ms", "tpot_ci_high_ms")}
#: Verdicts that fail the gate; all but "regressed" only for a configuration usable in the base run.
FAILURES = ("regressed", "now failing", "missing in new run", "no result in new run")


def compare_runs(base: dict[str, np.ndarray], new: dict[str, np.ndarray],
                 threshold_pct: float = 5.0) -> list[dict]:
    """One dict per configuration in either run: both values with CIs, change_pct, significant, verdict."""
    columns = tuple(k for k in key_columns(base) if k in key_columns(new))  # an older file has fewer
    b, n = _index(base, columns), _index(new, columns)
    out = []
    for key in sorted(set(b) | set(n), key=lambda k: tuple(map(str, k))):
        row = {**dict(zip(columns, key)), "base": b.get(key), "new": n.get(key), "change_pct": math.nan,
               "p99_change_pct": math.nan, "significant": False}
        row["verdict"] = _verdict(row, threshold_pct)
        out.append(row)
    return out


def regressed(rows: list[dict]) -> bool:
    return bool(failures(rows))


def failures(rows: list[dict]) -> list[dict]:
    """The rows that fail the gate: a significant regression, or a configuration the base run measured that
    the new run did not (now failing, unavailable, interrupted, missing)."""
    return [r for r in rows if r["verdict"] in FAILURES]


def _index(t: dict[str, np.ndarray], columns: tuple[str, ...]) -> dict[tuple, dict]:
    t, rows = per_configuration(t)
    thr, lo, hi = throughput_ci(t)
    ok = converged(t)
    out = {}
    for i in rows:
        cfg = config_of(t, int(i))
        out[tuple(cfg[k] for k in columns)] = {
            "status": str(col(t, "status", "ok")[i]), "message": str(col(t, "message", "")[i]),
            "converged": bool(ok[i]),
            "value": float(thr[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i]),
            "p99_ms": float(latency_p99(t)[i]),
            **{f"{name}_{part}": float(col(t, c)[i]) for name, cols in TOKEN_CHANGES.items()
               for part, c in zip(("value", "ci_low", "ci_high"), cols)}}
    return out


def _verdict(row: dict, threshold_pct: float) -> str:
    b, n = row["base"], row["new"]
    if b is None:
        return "new configuration"
    if not (b["status"] == "ok" and b["value"] > 0):  # nothing to hold the new run to
        return "only in base run" if n is None else f"not comparable (base {b['status']})"
    if n is None:
        return "missing in new run"
    if n["status"] in FAILING:
        return "now failing"
    if n["status"] != "ok" or not n["value"] > 0:  # unavailable, interrupted, or no throughput
        return "no result in new run"
    row["change_pct"] = (n["value"] / b["value"] - 1) * 100
    row["p99_change_pct"] = (n["p99_ms"] / b["p99_ms"] - 1) * 100 if b["p99_ms"] > 0 else math.nan
    for name in TOKEN_CHANGES:
        bv, nv = b[f"{name}_value"], n[f"{name}_value"]
        row[f"{name}_change_pct"] = (nv / bv - 1) * 100 if bv > 0 and math.isfinite(nv) else math.nan
        row[f"{name}_significant"] = bool(n[f"{name}_ci_high"] < b[f"{name}_ci_low"]
                                          or n[f"{name}_ci_low"] > b[f"{name}_ci_high"])
    row["significant"] = bool(n["ci_high"] < b["ci_low"] or n["ci_low"] > b["ci_high"])
    if not row["significant"]:
        return "no significant change"
    if row["change_pct"] < -threshold_pct:
        return "regressed"
    if row["change_pct"] > threshold_pct:
        return "improved"
    return "within threshold"


def format_table(rows: list[dict], base_name: str, new_name: str, threshold_pct: float) -> str:
    """The comparison as a plain-text table with a closing verdict line."""
    tokens = [n for n in TOKEN_CHANGES if any(math.isfinite(r.get(f"{n}_change_pct", math.nan)) for r in rows)]
    header = ("configuration", "base samples/s [95 % CI]", "new samples/s [95 % CI]", "change", "p99 change",
              *(f"{n.upper()} change" for n in tokens), "verdict")
    body = [(label(r, ("model",)), _value(r["base"]), _value(r["new"]), _pct(r["change_pct"], r["significant"]),
             _pct(r["p99_change_pct"], False),
             *(_pct(r.get(f"{n}_change_pct", math.nan), r.get(f"{n}_significant", False)) for n in tokens),
             r["verdict"]) for r in rows]
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(header)]
    lines = [f"base: {base_name}", f"new:  {new_name}", "",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if k in (0, len(header) - 1) else c.rjust(w)
                        for k, (c, w) in enumerate(zip(b, widths))).rstrip() for b in body]
    bad = failures(rows)
    lines += ["", f"{len(bad)} of {len(rows)} configurations regressed (a significant drop of more than "
                  f"{threshold_pct:g} %) or have no result in the new run:" if bad else
              f"no configuration regressed significantly beyond {threshold_pct:g} % ({len(rows)} compared; "
              "* = 95 % CIs apart)"]
    lines += [f"  {label(r, ('model',))}: {_why(r)}" for r in bad]
    return "\n".join(lines)


def _why(row: dict) -> str:
    """Why a row fails the gate, in words."""
    n = row["new"]
    if row["verdict"] == "regressed":
        return f"regressed {row['change_pct']:+.1f} % (95 % CIs apart)"
    if n is None:
        return "missing in new run"
    message = f": {n['message']}" if n["message"] else ""
    return f"{row['verdict']} (new run: {n['status']}{message})"


def _value(side: dict | None) -> str:
    if side is None:
        return "—"
    if side["status"] != "ok" or not math.isfinite(side["value"]):
        return side["status"]
    hi = f"{side['ci_high']:.4g}" if math.isfinite(side["ci_high"]) else "∞"
    return f"{side['value']:.4g} [{side['ci_low']:.4g}, {hi}]"


def _pct(v: float, significant: bool) -> str:
    return f"{v:+.1f} %" + ("*" if significant else "") if math.isfinite(v) else ""
