"""Coverage: how often one run's 95 % CI holds another run's median, for the same small sweep.

Runs the same sweep K times as independent `mpirun` jobs (each loads its model and measures afresh),
each with --repeats R and the measuring rules of configs/cpu.yaml (warm-up, 10-60 s windows, target
CI), so that a configuration's windows lie minutes apart as in a real sweep, then asks, for every
configuration and every ordered pair of runs (A, B): does A's reported 95 % CI hold B's reported
median? Side by side, from the same windows, it asks the same of single windows (what a run without
--repeats reports): does one window's own CI hold the median of a window of another run? And it
measures how far whole runs sit apart (a factor common to all their configurations, which no window of
a run can see) and the coverage with each run's factor divided out.

Prints the coverages, the median CI half-width each costs, and as last line `ci_coverage: X` (the
combined CIs' coverage across runs; goal >= 0.90 on a noisy 2-core machine).

    python benchmarks/coverage.py                 # distilbert-base, fp32 and bf16, batch 1-8, seq 128, 5 runs
    python benchmarks/coverage.py --runs 8 --repeats 5
    python benchmarks/coverage.py --quick         # the synthetic model, 2 short runs (CI smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from mpibench.analysis.table import config_of, label, per_configuration, window_rows
from mpibench.store import read_tasks

ROOT = Path(__file__).resolve().parent.parent


def cpu_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "cpu.yaml").read_text())


def run_once(out: Path, ranks: int, args: list[str]) -> None:
    cmd = ["mpirun", "--oversubscribe", "-n", str(ranks), sys.executable, "-m", "mpibench.run", *args,
           "--output", str(out)]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def estimates(path: Path) -> tuple[dict, dict]:
    """({label: (median, low, high)} as the run reports it, {label: [(median, low, high) per window]})."""
    t = read_tasks(path)
    combined, rows = per_configuration(t)
    ok = combined["status"] == "ok"
    reported = {_key(combined, i): _ci(combined, i) for i in rows if ok[i]}
    windows: dict[tuple, list] = {}
    for w in window_rows(t):
        for i in w:
            if t["status"][i] == "ok":
                windows.setdefault(_key(t, i), []).append(_ci(t, i))
    return reported, windows


def _key(t: dict, i: int) -> str:
    return label(config_of(t, int(i)), ("model",))


def _ci(t: dict, i: int) -> tuple[float, float, float]:
    return float(t["e2e_p50_ms"][i]), float(t["e2e_ci_low_ms"][i]), float(t["e2e_ci_high_ms"][i])


def coverage(per_run: list[dict]) -> tuple[int, int, float]:
    """(held, asked, median relative half-width) over ordered pairs of different runs, per configuration."""
    held = asked = 0
    widths = []
    for a, b in itertools.permutations(range(len(per_run)), 2):
        for key, estimates_a in per_run[a].items():
            for (m, lo, hi) in estimates_a:
                widths.append((hi - lo) / 2 / m)
                for (other, _, _) in per_run[b].get(key, []):
                    held += lo <= other <= hi
                    asked += 1
    return held, asked, float(np.median(widths)) if widths else float("nan")


def common_shift(per_run: list[dict]) -> tuple[float, list[dict]]:
    """How far whole runs sit apart: per run, the median over configurations of log(its median / the
    configuration's median over runs). Returns the median |pairwise shift| and the runs with their own
    shift divided out (what the coverage would be if runs differed only configuration by configuration)."""
    keys = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    if not keys:
        return float("nan"), per_run
    centre = {k: np.median([r[k][0][0] for r in per_run]) for k in keys}
    shifts = [float(np.median([np.log(r[k][0][0] / centre[k]) for k in keys])) for r in per_run]
    pairs = [abs(a - b) for a, b in itertools.combinations(shifts, 2)]
    scaled = [{k: [tuple(x / np.exp(s) for x in r[k][0])] for k in keys} for r, s in zip(per_run, shifts)]
    return float(np.expm1(np.median(pairs))) if pairs else float("nan"), scaled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the synthetic (sleeping) model, 2 short runs of 2 windows")
    ap.add_argument("--runs", type=int, default=5, help="independent runs (default 5)")
    ap.add_argument("--repeats", type=int, default=None, help="windows per configuration (default: configs/cpu.yaml's)")
    ap.add_argument("--ranks", type=int, default=3, help="ranks per run: rank 0 coordinates (default 3)")
    ap.add_argument("--model", default="distilbert-base-uncased")
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--seq-lens", default="128")
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else int(cpu_config()["measure"]["repeats"]))
    runs = 2 if args.quick else args.runs
    sweep = ["--model", "synthetic" if args.quick else args.model, "--batch-sizes", args.batch_sizes,
             "--seq-lens", "32" if args.quick else args.seq_lens, "--precisions", "fp32" if args.quick else args.precisions,
             "--repeats", str(repeats)]
    if args.quick:
        sweep += ["--warmup-s", "0", "--min-time", "0.2", "--max-time", "0.5"]
    else:  # configs/cpu.yaml's measuring rules, so that its windows last as long as a real sweep's
        m = cpu_config()["measure"]
        sweep += ["--warmup-s", str(m["warmup_s"]), "--min-time", str(m["min_time_s"]),
                  "--max-time", str(m["max_time_s"]), "--target-ci", str(m["target_ci"])]
    reported, windows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(runs):
            out = Path(tmp) / f"run{k}.h5"
            run_once(out, args.ranks, sweep)
            r, w = estimates(out)
            reported.append({key: [v] for key, v in r.items()})
            windows.append(w)
            for key, (m, lo, hi) in sorted(r.items()):
                print(f"run {k + 1}: {key}: median {m:.3f} ms  95% CI [{lo:.3f}, {hi:.3f}]  "
                      f"windows {', '.join(f'{x[0]:.3f}' for x in w.get(key, []))}", flush=True)
    held, asked, width = coverage(reported)
    held1, asked1, width1 = coverage(windows)
    print(f"{' '.join(sweep)}; {runs} runs of {args.ranks} ranks")
    print(f"single windows: a window's CI held another run's window median {held1}/{asked1} "
          f"({held1 / max(1, asked1):.2f}); median CI half-width {100 * width1:.1f} %")
    print(f"--repeats {repeats}: a run's combined CI held another run's median {held}/{asked} "
          f"({held / max(1, asked):.2f}); median CI half-width {100 * width:.1f} %")
    shift, scaled = common_shift(reported)
    held2, asked2, _ = coverage(scaled)
    print(f"whole runs sit apart by a common factor: {100 * shift:.1f} % (median over pairs of runs, over all "
          f"configurations alike); with each run's factor divided out its CIs held {held2}/{asked2} "
          f"({held2 / max(1, asked2):.2f})")
    print("load average (1, 5, 15 min) at the end: %.1f %.1f %.1f" % os.getloadavg())
    print(f"ci_coverage: {held / max(1, asked):.3f}")


if __name__ == "__main__":
    main()
