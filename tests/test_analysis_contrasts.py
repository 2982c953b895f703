"""Precisions, backends and attention against their baselines: exact ratios, CI flags, the report section."""

import math

import numpy as np
import pytest
from conftest import run_cli

from mpibench.analysis import analyze
from mpibench.analysis import document as D
from mpibench.analysis import synthetic as S
from mpibench.analysis.contrasts import contrasts, section, unavailable
from mpibench.analysis.table import latest_per_config, throughput_ci
from mpibench.analyze import main

COLUMNS = ("precision", "backend", "batch_size", "status", "message", "e2e_p50_ms", "e2e_ci_low_ms",
           "e2e_ci_high_ms", "e2e_p99_ms")
NAN = math.nan
#: bf16 is 2× fp32 at batch sizes 1 and 2 (CIs overlap at 2) and 0.5× at 4 and 8; bf16 at 16 has no fp32
#: twin and fp32 at 32 ran out of memory; compile is 1.25× eager at 4; fp16 was unavailable.
ROWS = [("fp32", "eager", 1, "ok", "", 10.0, 9.9, 10.1, 20.0),
        ("fp32", "eager", 2, "ok", "", 10.0, 9.9, 10.1, 20.0),
        ("fp32", "eager", 4, "ok", "", 10.0, 9.9, 10.1, 20.0),
        ("fp32", "eager", 8, "ok", "", 10.0, 9.9, 10.1, 20.0),
        ("fp32", "eager", 32, "oom", "rank 1 on node001: out of memory", NAN, NAN, NAN, NAN),
        ("bf16", "eager", 1, "ok", "", 5.0, 4.9, 5.1, 10.0),
        ("bf16", "eager", 2, "ok", "", 5.0, 4.9, 12.0, NAN),
        ("bf16", "eager", 4, "ok", "", 20.0, 19.8, 20.2, 50.0),
        ("bf16", "eager", 8, "ok", "", 20.0, 19.8, 20.2, 50.0),
        ("bf16", "eager", 16, "ok", "", 20.0, 19.8, 20.2, 50.0),
        ("bf16", "eager", 32, "ok", "", 20.0, 19.8, 20.2, 50.0),
        ("fp32", "compile", 4, "ok", "", 8.0, 7.9, 8.1, 10.0),
        ("fp16", "eager", 1, "unavailable", "rank 1 on node001: fp16 needs a GPU", NAN, NAN, NAN, NAN)]


def table(rows=ROWS) -> dict:
    t = {k: np.array([r[n] for r in rows]) for n, k in enumerate(COLUMNS)}
    for k, v in {"model": "m", "device": "cpu", "seq_len": 128, "threads": 4}.items():
        t[k] = np.array([v] * len(rows))
    return t


def test_every_row_against_its_baseline_twin():
    t = table()
    found = contrasts(t, latest_per_config(t))
    # bf16 at 16 and 32 are skipped: no fp32 twin at 16, and fp32 at 32 ran out of memory
    assert [(c["dimension"], c["value"], c["config"]["batch_size"]) for c in found] == [
        ("precision", "bf16", 1), ("precision", "bf16", 2), ("precision", "bf16", 4), ("precision", "bf16", 8),
        ("backend", "compile", 4)]
    assert [c["throughput_ratio"] for c in found] == pytest.approx([2.0, 2.0, 0.5, 0.5, 1.25], abs=1e-12)
    assert [c["cis_apart"] for c in found] == [True, False, True, True, True]
    assert [c["p99_ratio"] for c in found] == pytest.approx([0.5, NAN, 2.5, 2.5, 0.5], abs=1e-12, nan_ok=True)
    compiled = found[-1]
    assert (t["precision"][compiled["row"]], t["backend"][compiled["row"]]) == ("fp32", "compile")
    assert (t["precision"][compiled["baseline_row"]], t["backend"][compiled["baseline_row"]]) == ("fp32", "eager")
    assert unavailable(t, latest_per_config(t)) == [
        {"dimension": "precision", "value": "fp16", "baseline": "fp32", "device": "cpu",
         "message": "rank 1 on node001: fp16 needs a GPU"}]


def test_the_section_states_each_contrast_in_one_line():
    md = D.to_markdown(section(table(), latest_per_config(table())))
    assert "## Precisions and backends" in md
    assert ("- bf16 vs fp32 on cpu: 0.50×–2.00× throughput over batch sizes 1–8 (faster at batch sizes 1 and 2, "
            "slower at 4 and 8; 95 % CIs apart at 3 of 4)") in md
    assert "- compile vs eager on cpu: 1.25× throughput over batch size 4 (faster; 95 % CIs apart)" in md
    assert "- fp16 on cpu: unavailable — rank 1 on node001: fp16 needs a GPU" in md
    assert "| bf16 vs fp32 | bs=2 | 2.00× | no | — |" in md
    assert "| compile vs eager | fp32 bs=4 | 1.25× | yes | 0.50× |" in md


def test_a_dimension_with_one_usable_value_gives_no_section():
    t = table([r for r in ROWS if r[0] == "fp32" and r[1] == "eager"])
    assert contrasts(t, latest_per_config(t)) == [] and section(t, latest_per_config(t)) == []


def test_a_synthetic_run_reports_bf16_slower_on_cpu(tmp_path):
    rows = S.sweep(batch_sizes=(1, 2, 4, 8), n=300)
    cfg = {"model": "distilbert-base-uncased", "device": "cpu", "precision": "fp16", "batch_size": 1,
           "seq_len": 128, "threads": 4}
    rows.append((S.task_row(len(rows), cfg, None, status="unavailable", message="fp16 is not supported on cpu"),
                 None))
    path = S.write(tmp_path / "prec.h5", rows)
    a = analyze(path)
    found = contrasts(a.tasks, a.rows)
    assert [c["config"]["batch_size"] for c in found] == [1, 2, 4, 8]
    thr = throughput_ci(a.tasks)[0]
    for c in found:
        assert c["throughput_ratio"] == pytest.approx(thr[c["row"]] / thr[c["baseline_row"]])
        assert c["throughput_ratio"] < 1  # the synthetic CPU has no AMX: bf16 is slower
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.index("## Results per device and precision") < md.index("## Precisions and backends") \
        < md.index("## Batch profile")
    assert "- bf16 vs fp32 on cpu: " in md and "over batch sizes 1–8 (slower at every batch size;" in md
    assert "- fp16 on cpu: unavailable — fp16 is not supported on cpu" in md


def test_one_precision_gives_no_section(tmp_path):
    path = S.write(tmp_path / "fp32.h5", S.sweep(batch_sizes=(1, 2), precisions=("fp32",), n=50))
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    assert "Precisions and backends" not in (out / "report.md").read_text()


@pytest.mark.mpi
def test_real_run_compares_its_two_precisions(tiny_run_4, tmp_path):
    out = tmp_path / "analysis"
    proc = run_cli([tiny_run_4, "--out", out], module="mpibench.analyze")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a = analyze(tiny_run_4)
    found = contrasts(a.tasks, a.rows)
    assert [(c["value"], c["config"]["batch_size"]) for c in found] == [("bf16", 1), ("bf16", 2), ("bf16", 4)]
    assert "- bf16 vs fp32 on cpu: " in (out / "report.md").read_text()
