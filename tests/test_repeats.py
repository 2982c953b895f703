"""--repeats: windows planned and interleaved, spread over ranks, combined into a CI that covers drift,
and findings that must hold in every window."""

import math

import numpy as np
import pytest
from conftest import TINY, run_cli

from mpibench.analysis import analyze
from mpibench.analysis.contrasts import contrasts
from mpibench.analysis.pipeline import _in_every_window
from mpibench.analysis.profile import batch_profile
from mpibench.analysis.table import per_configuration, window_rows
from mpibench.cluster.coordinator import Coordinator
from mpibench.config import build
from mpibench.plan import dispatch_order, expand, first_windows
from mpibench.stats import Z95, combine_windows, t975
from mpibench.store import read_tasks


# ---------------------------------------------------------------- the combined CI


def test_one_window_keeps_its_own_median_and_ci():
    assert combine_windows([10.0], [9.0], [11.0]) == (10.0, 9.0, 11.0)
    assert combine_windows([10.0, math.nan], [9.0, 1.0], [11.0, 2.0]) == (10.0, 9.0, 11.0)
    assert all(math.isnan(v) for v in combine_windows([math.nan], [1.0], [2.0]))


def test_drift_between_windows_widens_the_ci_by_t_over_the_windows():
    medians = [10.0, 12.0, 14.0]  # tight windows (+-0.1), far apart: the drift decides the width
    centre, lo, hi = combine_windows(medians, [m - 0.1 for m in medians], [m + 0.1 for m in medians])
    half = t975(2) * math.sqrt(np.var(medians, ddof=1) / 3)
    assert centre == 12.0 and lo == pytest.approx(12 - half) and hi == pytest.approx(12 + half)
    assert lo < 10.0 and hi > 14.0  # every window's median lies inside


def test_windows_that_agree_are_never_narrower_than_their_own_noise():
    medians = [10.0, 10.0, 10.0]  # identical medians: s = 0, so the windows' own CIs set the width
    centre, lo, hi = combine_windows(medians, [9.0] * 3, [11.0] * 3)
    se = 2.0 / (2 * Z95)
    assert (hi - lo) / 2 == pytest.approx(t975(2) * se / math.sqrt(3))
    assert combine_windows([10.0, 10.0], [-math.inf, 9.0], [math.inf, 11.0])[1:] == (0.0, math.inf)  # >= 0


# ---------------------------------------------------------------- planning and dispatch


def _cfg(repeats: int):
    return build({"model": {"name": "synthetic"}, "sweep": {"batch_sizes": [1, 2, 4, 8], "precisions": ["fp32"]},
                  "measure": {"repeats": repeats}})


def test_every_configuration_gets_one_task_per_window():
    one, three = expand(_cfg(1)), expand(_cfg(3))
    assert len(three) == 3 * len(one) == 12
    assert [t.task_id for t in three] == list(range(12))
    assert [t.repeat for t in three] == [0] * 4 + [1] * 4 + [2] * 4
    assert [t.key for t in three[4:8]] == [t.key for t in one]
    assert first_windows(three) == three[:4]
    assert "#2" in three[4].label() and "#" not in three[0].label()


def test_windows_are_dispatched_one_after_the_other_each_in_its_own_random_order():
    tasks = expand(build({"model": {"name": "synthetic"}, "sweep": {"batch_sizes": list(range(1, 21))},
                          "measure": {"repeats": 3}}))
    order = dispatch_order(tasks)
    assert [t.repeat for t in order] == sorted(t.repeat for t in tasks)
    per_window = [[t.key for t in order if t.repeat == r] for r in range(3)]
    assert len({tuple(w) for w in per_window}) == 3  # not the same order every window
    by_cost = [t.key for t in dispatch_order(first_windows(tasks))]
    assert per_window[0] != by_cost  # no longer longest first
    assert [t.task_id for t in dispatch_order(list(reversed(tasks)))] == [t.task_id for t in order]  # seeded


def test_a_rank_gets_a_configuration_it_has_not_measured_when_there_is_one():
    from collections import deque

    tasks = expand(_cfg(2))
    c = Coordinator(comm=None, on_result=lambda r: None, stop=lambda: None)
    queue = deque(dispatch_order(tasks))
    mine = [c._next_for(1, queue) for _ in range(4)]  # rank 1 takes the first window of everything
    assert {t.repeat for t in mine} == {0}
    other = c._next_for(2, deque(t for t in tasks if t.repeat == 1))
    assert other.repeat == 1
    again = c._next_for(1, deque([t for t in tasks if t.repeat == 1]))
    assert again.key in {t.key for t in mine}  # nothing new left for rank 1: it takes the first
    fresh = deque(dispatch_order(tasks))
    c2 = Coordinator(comm=None, on_result=lambda r: None, stop=lambda: None)
    first = c2._next_for(1, fresh)
    fresh.appendleft(next(t for t in tasks if t.key == first.key and t.repeat == 1))
    assert c2._next_for(1, fresh).key != first.key  # skips its own configuration's next window


# ---------------------------------------------------------------- analysis: combined figures, verdicts


def _table(per_window_p50: list[list[float]], halfwidth: float = 0.02, batch=(1, 2, 4), precisions=("fp32",)):
    """A hand-built /tasks table: window r, configuration i has median per_window_p50[r][i]."""
    rows = []
    configs = [(p, b) for p in precisions for b in batch]
    for r, medians in enumerate(per_window_p50):
        for (p, b), m in zip(configs, medians):
            rows.append(dict(task_id=len(rows), model="m", device="cpu", precision=p, batch_size=b, seq_len=8,
                             threads=1, repeat=r, status="ok", converged=True, e2e_p50_ms=m,
                             e2e_ci_low_ms=m * (1 - halfwidth), e2e_ci_high_ms=m * (1 + halfwidth),
                             e2e_mean_ms=m, e2e_p99_ms=2 * m))
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def test_per_configuration_combines_the_windows_in_one_row_each():
    t = _table([[1.0, 2.0, 4.0], [1.2, 2.0, 4.0], [0.8, 2.0, 4.0]])
    combined, rows = per_configuration(t)
    assert len(rows) == 3 and set(combined["repeat"][rows]) == {2}  # the last window's row states them
    assert [len(w) for w in window_rows(t)] == [3, 3, 3]
    first = rows[combined["batch_size"][rows] == 1][0]
    centre, lo, hi = combine_windows([1.0, 1.2, 0.8], [0.98, 1.176, 0.784], [1.02, 1.224, 0.816])
    assert combined["e2e_p50_ms"][first] == pytest.approx(centre)
    assert combined["throughput_sps"][first] == pytest.approx(1e3 / centre)
    assert combined["throughput_ci_low_sps"][first] == pytest.approx(1e3 / hi)
    assert combined["windows"][first] == 3 and combined["window_spread"][first] == pytest.approx(0.5)
    assert t["e2e_p50_ms"][first] == 0.8  # the caller's table is left as it was
    assert combined["converged"][first]
    t["converged"][0] = False  # a window that ran out of time still counts, but the configuration is not converged
    combined, rows = per_configuration(t)
    assert combined["windows"][first] == 3 and not combined["converged"][first]
    t["status"][7] = "failed"  # batch size 2's last window: the window before it states the figures
    combined, rows = per_configuration(t)
    second = rows[combined["batch_size"][rows] == 2][0]
    assert second == 4 and combined["status"][second] == "ok" and combined["windows"][second] == 2


def test_an_anomaly_missing_from_one_window_is_withdrawn():
    # batch size 2 is 21 % below the trend of its neighbours in nine windows, 8 % (no anomaly) in the tenth
    windows = [[1.0, 1.0, 2.5]] * 9 + [[1.0, 1.45, 2.5]]
    t = _table(windows, halfwidth=0.005)
    combined, rows = per_configuration(t)
    profile, found = batch_profile(combined, rows)
    assert [f["batch_size"] for f in found] == [2]  # the combined figures alone would flag it
    assert _in_every_window(t, combined, profile, found) == []
    assert not any(profile["anomaly"])
    assert profile["vs_prev_significant"][rows[1]]  # faster than batch size 1 in every window: that stands
    t = _table([[1.0, 1.0, 2.5]] * 10, halfwidth=0.005)  # in every window: it stands
    combined, rows = per_configuration(t)
    profile, found = batch_profile(combined, rows)
    assert len(found) == 1 and _in_every_window(t, combined, profile, found) == found
    assert profile["anomaly"][rows[1]] == "faster" and profile["vs_prev_significant"][rows[1]]
    t = _table([[1.0, 1.0, 2.5]] * 9 + [[1.0, 2.0, 2.5]], halfwidth=0.005)  # no faster than bs 1 in one window
    combined, rows = per_configuration(t)
    profile, found = batch_profile(combined, rows)
    assert profile["vs_prev_significant"][rows[1]]  # the combined figures alone call it significant
    _in_every_window(t, combined, profile, found)
    assert not profile["vs_prev_significant"][rows[1]]


def test_cis_apart_must_hold_in_every_window():
    # bf16 half as fast as fp32 in nine windows, as fast in the tenth
    slow, even = [1.0, 2.0, 4.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    t = _table([slow] * 9 + [even], halfwidth=0.001, precisions=("fp32", "bf16"))
    combined, rows = per_configuration(t)
    assert [c["cis_apart"] for c in contrasts(combined, rows)] == [True] * 3  # the combined figures alone
    assert [c["cis_apart"] for c in contrasts(combined, rows, t)] == [False] * 3
    t = _table([slow] * 10, halfwidth=0.001, precisions=("fp32", "bf16"))
    combined, rows = per_configuration(t)
    assert [c["cis_apart"] for c in contrasts(combined, rows, t)] == [True] * 3


# ---------------------------------------------------------------- a real run


@pytest.mark.mpi
def test_a_real_run_with_repeats_measures_every_window_and_reports_them_combined(tmp_path):
    out = tmp_path / "repeats.h5"
    proc = run_cli(["--config", TINY, "--batch-sizes", "1,2", "--precisions", "fp32", "--repeats", "3",
                    "--max-time", "0.5", "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 tasks (2 configurations x 3 windows)" in proc.stdout
    t = read_tasks(out)
    assert sorted(zip(t["batch_size"].tolist(), t["repeat"].tolist())) == [(b, r) for b in (1, 2) for r in range(3)]
    starts = {(int(b), int(r)): s for b, r, s in zip(t["batch_size"], t["repeat"], t["start_time"])}
    assert max(starts[(b, 0)] for b in (1, 2)) <= min(starts[(b, 2)] for b in (1, 2))  # window by window
    a = analyze(out)
    assert len(a.rows) == 2 and set(a.tasks["windows"][a.rows]) <= {1, 2, 3}
    ok = a.tasks["status"][a.rows] == "ok"
    assert np.all(a.tasks["windows"][a.rows][ok] >= 2)
    report = run_cli([out, "--out", tmp_path / "report"], module="mpibench.analyze")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "windows (--repeats)" in (tmp_path / "report" / "report.md").read_text()
