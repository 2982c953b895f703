"""Offline analysis of real and synthetic run files: report, figures, optimal.json, --compare, edge cases."""

import importlib.util
import json
import math
import subprocess
import sys
import textwrap

import h5py
import matplotlib.image
import numpy as np
import pytest

from conftest import ROOT, mpi_env, run_cli, sha256
from mpibench.analysis import analyze, figures, report, synthetic as S
from mpibench.analyze import main
from mpibench.config import build
from mpibench.store import read_tasks

FIGURES = ("throughput", "per_sample_latency", "phases", "latency_percentiles", "pareto")
KEYS = ("model", "device", "precision", "batch_size", "seq_len", "threads")


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    h, w = matplotlib.image.imread(path).shape[:2]
    assert h > 300 and w > 300, path


def demo_rows():
    """CPU with energy and an unconverged row, a GPU with an oom and an interrupted task, one anomaly."""
    rows = S.sweep(devices=("cpu", "cuda:0"), batch_sizes=(1, 2, 4, 8, 16, 32), n=400,
                   slowdown={("cpu", "fp32", 8): 0.7})
    out = []
    for row, raw in rows:
        cfg = {k: row[k] for k in KEYS}
        if row["device"] == "cpu":
            row = S.task_row(row["task_id"], cfg, raw, power_w=200.0,
                             converged=not (row["precision"] == "bf16" and row["batch_size"] == 32))
        elif row["batch_size"] == 32:
            status = "oom" if row["precision"] == "fp32" else "interrupted"
            row = S.task_row(row["task_id"], cfg, None, status=status, message=f"rank 2 on node001: {status}")
            raw = None
        out.append((row, raw))
    return out


def scaling_row(ranks, nodes, **extra):
    eff = 1 / (1 + 0.05 * (ranks - 1))
    return {"model": "distilbert-base-uncased", "device": "cuda", "precision": "fp32", "batch_size": 16,
            "seq_len": 128, "threads": 4, "n_ranks": ranks, "n_nodes": nodes,
            "aggregate_throughput_sps": 1000.0 * ranks * eff, "per_rank_throughput_sps": 1000.0 * eff,
            "efficiency": eff, **extra}


def add_scaling(path, rows=None):
    """The /scaling group a scaling run adds (by default ranks 1-8 on 1-2 nodes)."""
    rows = rows or [scaling_row(nodes * per_node, nodes) for nodes in (1, 2) for per_node in (1, 2, 4)]
    with h5py.File(path, "r+") as f:
        if "scaling" in f:
            del f["scaling"]
        g = f.create_group("scaling")
        for k in rows[0]:
            values = [r[k] for r in rows]
            g[k] = np.array(values, dtype=h5py.string_dtype() if isinstance(values[0], str) else None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = S.write(tmp_path_factory.mktemp("demo") / "demo.h5", demo_rows(), n_hosts=2, gpus=4, world_size=8)
    add_scaling(path)
    return path


@pytest.fixture(scope="module")
def demo_out(demo):
    out = demo.with_name("report")
    assert main([str(demo), "--out", str(out), "--latency-slo-ms", "20"]) == 0
    return out


def test_report_figures_and_optimal_json(demo_out):
    for name in (*FIGURES, "energy", "scaling_ranks", "scaling_nodes"):
        assert_png(demo_out / f"{name}.png")
        assert f"]({name}.png)" in (demo_out / "report.md").read_text()
    md = (demo_out / "report.md").read_text()
    opt = json.loads((demo_out / "optimal.json").read_text())
    best = opt["objectives"]["throughput"]["overall"][0]
    assert best["device"] == "cuda:0" and best["ci_low"] < best["value"] < best["ci_high"]
    assert f"cuda:0 {best['precision']} bs={best['batch_size']}" in md
    for text in ("## Recommendation", "## Results per device and precision", "### cpu · fp32", "## Scaling",
                 "**oom**", "**interrupted**", "**did not converge**", "J/sample", "Never recommended"):
        assert text in md, text
    energy = opt["objectives"]["energy"]["per_device"]
    assert [r["batch_size"] is not None for r in energy] == [True, False]  # cpu measured, GPU not
    html = (demo_out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES) + 3 and "](" not in html


def test_scaling_steps_by_axis_and_a_failed_step(tmp_path):
    nan = float("nan")
    rows = [scaling_row(r, n, by="ranks", status="ok") for r, n in ((1, 1), (2, 1), (4, 2), (8, 2))]
    rows += [scaling_row(4, 1, by="nodes", status="ok"), scaling_row(8, 2, by="nodes", status="ok"),
             scaling_row(16, 4, by="ranks", status="failed", aggregate_throughput_sps=nan,
                         per_rank_throughput_sps=nan, efficiency=nan)]
    path = S.write(tmp_path / "scaling.h5", S.sweep(batch_sizes=(16,), precisions=("fp32",), n=50))
    add_scaling(path, rows)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    assert_png(out / "scaling_ranks.png")
    assert_png(out / "scaling_nodes.png")
    md = (out / "report.md").read_text()
    assert "8 ranks on 2 node(s)" in md and "| 16 | 4 |" in md  # the failed step is listed, not summarised


def test_the_planted_anomaly_is_found_and_only_it(demo):
    a = analyze(demo)
    assert [(f["device"], f["precision"], f["batch_size"], f["kind"]) for f in a.anomalies] == [
        ("cpu", "fp32", 8, "faster")]
    assert a.anomalies[0]["neighbours"] == [4, 16] and a.anomalies[0]["departure_pct"] < -20


def test_raw_statistics_match_the_table(demo):
    a = analyze(demo, block_rows=1000)  # many small blocks: tasks straddle no block boundary
    t = a.tasks
    ok = t["status"] == "ok"
    np.testing.assert_allclose(t["raw_p50_ms"][ok], t["e2e_p50_ms"][ok])
    np.testing.assert_allclose(t["raw_p99_ms"][ok], t["e2e_p99_ms"][ok])
    assert (t["p99_ci_low_ms"][ok] <= t["e2e_p99_ms"][ok]).all()
    assert (t["raw_n"][~ok] == 0).all() and a.run.n_samples == t["n_iters"][ok].sum()


def test_a_killed_job_is_analysed_and_says_what_is_missing(tmp_path):
    cfg = build({"model": {"name": "distilbert-tiny"}, "sweep": {"batch_sizes": [1, 2, 4], "threads": [1]}})
    path = tmp_path / "killed.h5"
    code = textwrap.dedent(f"""
        import os
        from mpibench.analysis import synthetic as S
        from mpibench.store import Store
        store = Store.create({str(path)!r}, S.attrs(config_yaml={cfg.to_yaml()!r}), S.hosts(1))
        for row, raw in S.sweep(batch_sizes=(1, 2), precisions=("fp32",), threads=1, model="distilbert-tiny",
                                n=50):
            store.append(row, raw)
            store.commit()
        os.kill(os.getpid(), 9)
    """)
    assert subprocess.run([sys.executable, "-c", code], env=mpi_env(), timeout=120).returncode == -9
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "The run did not complete" in md and "1 planned configurations have no result" in md
    assert "cpu fp32 bs=4 seq=128 threads=1" in md
    assert not json.loads((out / "optimal.json").read_text())["complete"]


def test_a_single_task_without_raw_samples_and_many_hosts(tmp_path):
    (row, raw), = S.sweep(batch_sizes=(4,), precisions=("fp32",), n=30)
    path = S.write(tmp_path / "one.h5", [(row, None)], n_hosts=200)  # stats in the row, raw lost
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    for name in FIGURES:
        assert_png(out / f"{name}.png")
    md = (out / "report.md").read_text()
    assert "and 168 more hosts" in md and "bs=4" in md
    best = json.loads((out / "optimal.json").read_text())["objectives"]["throughput"]["per_device"][0]
    assert best["batch_size"] == 4


def test_the_report_shows_mfu_against_the_estimate_and_the_measured_gemm_peak(tmp_path):
    rows = S.sweep(batch_sizes=(1, 2), precisions=("fp32",), n=30)
    for (row, _), (est, measured) in zip(rows, ((0.1, 0.4), (0.2, float("nan")))):
        row.update(mfu=est, mfu_measured=measured)
    path = S.write(tmp_path / "mfu.h5", rows)
    with h5py.File(path, "r+") as f:
        f["hosts/gemm_tflops"][0] = json.dumps({"cpu": {"threads": 4, "fp32": 2.5, "bf16": None}}).encode()
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "MFU % (estimate / measured)" in md and "| 10 / 40 |" in md and "| 20 / — |" in md
    assert "cpu (4 threads): fp32 2.5, bf16 —" in md
    plain = tmp_path / "plain"  # no MFU anywhere (synthetic rows): no column
    assert main([str(S.write(tmp_path / "plain.h5", S.sweep(batch_sizes=(1,), n=30))), "--out", str(plain)]) == 0
    assert "MFU" not in (plain / "report.md").read_text()


def test_nothing_usable_still_gives_a_report(tmp_path):
    cfg = {"model": "m", "device": "cuda:0", "precision": "fp32", "seq_len": 128, "threads": 1}
    rows = [(S.task_row(i, {**cfg, "batch_size": bs}, None, status="unavailable", message="rank 1 on n1: no CUDA"),
             None) for i, bs in enumerate((1, 2))]
    path = S.write(tmp_path / "none.h5", rows)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    assert not list(out.glob("*.png"))
    assert "No throughput recommendation" in (out / "report.md").read_text()
    best = json.loads((out / "optimal.json").read_text())["objectives"]["throughput"]["per_device"][0]
    assert best["batch_size"] is None and best["value"] is None


def test_nothing_converged_still_draws_every_figure(tmp_path):
    rows = S.sweep(batch_sizes=(1, 2, 4, 8), n=60, power_w=150.0, converged=False)
    path = S.write(tmp_path / "unconverged.h5", rows)
    add_scaling(path)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    names = (*FIGURES, "energy", "scaling_ranks", "scaling_nodes")
    for name in names:
        assert_png(out / f"{name}.png")
        assert f"]({name}.png)" in md, name
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)
    assert "No throughput recommendation" in md and "did not converge" in md
    a = analyze(path)
    assert not a.tasks["converged"][a.rows].any()
    assert [f(a, tmp_path).name for f in report.FIGURES if f not in figures.GENERATION] == [  # pareto too
        "throughput", "per_sample_latency", "phases", "latency_percentiles", "energy", "pareto", "scaling_ranks",
        "scaling_nodes"]


def test_drift_within_a_measurement_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    means = S.phase_means_ms("cpu", "fp32", 4, 128)
    first = S.sample_raw(means, 300, rng)
    second = S.sample_raw({**means, "forward": means["forward"] * 1.3}, 300, rng)
    raw = {p: np.concatenate([first[p], second[p]]) for p in first}
    cfg = {"model": "m", "device": "cpu", "precision": "fp32", "batch_size": 4, "seq_len": 128, "threads": 1}
    a = analyze(S.write(tmp_path / "drift.h5", [(S.task_row(0, cfg, raw), raw)]))
    assert a.tasks["drift_significant"][0] and a.tasks["drift_pct"][0] > 20


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mpibench.analyze", *map(str, args)], capture_output=True,
                          text=True, env=mpi_env(), cwd=ROOT, timeout=300)


def test_foreign_newer_and_missing_files_exit_2_with_one_line(tmp_path, demo):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    newer = tmp_path / "newer.h5"
    newer.write_bytes(demo.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    for args, words in (([other], "not an mpibench results file"), ([newer], "schema version 99"),
                        ([tmp_path / "nope.h5"], "no such file"), (["--compare", demo, other], "not an mpibench"),
                        ([demo, "--threshold", "x"], "not a number"),
                        ([demo, "--out", demo], "is a file; give a directory"),
                        ([demo, "--out", "/proc/mpibench-analysis"], "--out: cannot write to directory '/proc'"),
                        ([other, "--out", tmp_path / "a" / "b"], "not an mpibench results file")):
        before = sha256(demo)
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
        assert sha256(demo) == before and not (tmp_path / "a").exists()


def test_compare_equal_runs_pass_and_a_planted_regression_fails(tmp_path, demo, capsys):
    assert main(["--compare", str(demo), str(demo)]) == 0
    assert "no configuration regressed" in capsys.readouterr().out
    slow = S.write(tmp_path / "slow.h5", S.sweep(devices=("cpu", "cuda:0"), batch_sizes=(1, 2, 4, 8, 16, 32),
                                                  n=400, slowdown={("cpu", "fp32", 8): 0.7 * 1.25}))
    assert main(["--compare", str(demo), str(slow)]) == 1
    out = capsys.readouterr().out
    assert "cpu fp32 bs=8 seq=128 threads=4" in out and "regressed" in out
    line = next(x for x in out.splitlines() if x.startswith("cpu fp32 bs=8 "))
    assert "regressed" in line and "%*" in line
    assert main(["--compare", str(demo), str(slow), "--threshold", "50"]) == 0  # the drop is ~20 %


def test_compare_flags_a_configuration_that_now_fails(tmp_path):
    base = S.sweep(batch_sizes=(1, 2), precisions=("fp32",), n=100)
    (row, _), second = base[0], base[1]
    broken = [(S.task_row(0, {k: row[k] for k in KEYS}, None, status="oom", message="rank 1: oom"), None), second]
    a, b = S.write(tmp_path / "a.h5", base), S.write(tmp_path / "b.h5", broken)
    assert main(["--compare", str(a), str(b)]) == 1
    assert main(["--compare", str(b), str(a)]) == 0  # fixed: not a regression


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_analysis_scripts(demo, tmp_path, capsys):
    assert _script("analyze_batch_profile")([str(demo), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "batch size 8 is" in out and "% faster per sample than the trend through batch sizes 4 and 16" in out
    assert _script("scaling_report")([str(demo), "--out", str(tmp_path)]) == 0
    assert "8 ranks on 2 node(s)" in capsys.readouterr().out
    assert _script("find_optimal")([str(demo), "--json", "--objective", "throughput"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["objectives"]) == ["throughput"]
    for name in ("per_sample_latency", "throughput", "phases", "scaling_ranks", "scaling_nodes"):
        assert_png(tmp_path / f"{name}.png")


def test_analysis_imports_neither_torch_nor_mpi(demo, tmp_path):
    code = (f"import sys; from mpibench.analyze import main; main([{str(demo)!r}, '--out', {str(tmp_path)!r}]); "
            "bad = [m for m in ('torch', 'transformers', 'mpi4py') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = ("import sys; from mpibench.analysis import choose_optimal, analyze; "
            "assert 'matplotlib' not in sys.modules")  # what run.py --optimal needs stays light
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.mpi
def test_real_mpirun_run_analysed(tiny_run_4, tmp_path):
    out = tmp_path / "analysis"
    proc = cli(tiny_run_4, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (out / "report.md").read_text()
    for name in FIGURES:  # drawn whether or not the measurements converged
        assert_png(out / f"{name}.png")
        assert f"]({name}.png)" in md
    opt = json.loads((out / "optimal.json").read_text())
    best = opt["objectives"]["throughput"]["per_device"][0]
    assert best["device"] == "cpu"
    t = read_tasks(tiny_run_4)
    if not ((t["status"] == "ok") & t["converged"].astype(bool)).any():  # a loaded machine: nothing to choose
        assert best["batch_size"] is None and "did not converge" in best["reason"]
        assert "No throughput recommendation" in md and "did not converge" in proc.stdout
    else:
        assert best["batch_size"] in (1, 2, 4) and best["precision"] in ("fp32", "bf16")
        name = f"cpu {best['precision']} bs={best['batch_size']} seq=32 threads=1"
        assert f"**Recommended for throughput: {name}" in md
        assert name in proc.stdout or f"{best['precision']} bs={best['batch_size']}" in proc.stdout
        i = list(t["task_id"]).index(best["task_id"])
        assert t["converged"][i] and math.isclose(best["value"], best["batch_size"] * 1e3 / t["e2e_p50_ms"][i])
    assert run_cli(["--compare", tiny_run_4, tiny_run_4], module="mpibench.analyze").returncode == 0
