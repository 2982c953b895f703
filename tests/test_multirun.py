"""One report over several runs: configurations matched, figures with CIs side by side, verdicts, overlays."""

import base64
import re

import h5py
import numpy as np
import pytest
from conftest import TINY, run_cli

from mpibench.analysis import synthetic as S
from mpibench.analysis.multirun import analyze_runs, labels_of, verdict
from mpibench.store import read_attrs


@pytest.fixture
def runs(tmp_path):
    """Three synthetic runs: b is 1.5x slower at fp32 batch 4 and lacks batch 16; c has no label."""
    a = S.write(tmp_path / "a.h5", S.sweep(seed=1), label="partition-a")
    b = S.write(tmp_path / "b.h5", S.sweep(seed=2, slowdown={("cpu", "fp32", 4): 1.5}, batch_sizes=(1, 2, 4, 8)),
                label="partition-b")
    c = S.write(tmp_path / "c.h5", S.sweep(seed=3))
    return a, b, c


def test_configurations_are_matched_and_judged_against_the_first_run(runs):
    r = analyze_runs(list(runs))
    assert r.labels == ["partition-a", "partition-b", "c.h5"]
    assert len(r.rows) == 10  # 2 precisions x 5 batch sizes; b measured 8 of them
    assert sum(rows[1] is None for rows in r.rows.values()) == 2
    b = r.columns.index("batch_size"), r.columns.index("precision")
    by = {(key[b[1]], key[b[0]]): verdict(r, rows) for key, rows in r.rows.items()}
    assert re.fullmatch(r"partition-b: -3\d\.\d % \(slower, 95 % CIs apart\); c\.h5: [+-]\d\.\d % \(CIs overlap\)",
                        by[("fp32", 4)]), by[("fp32", 4)]
    assert by[("fp32", 16)].startswith("partition-b: missing; ")
    assert sum("CIs apart" in v for v in by.values()) == 1


def test_labels_fall_back_to_file_names_and_paths_where_names_clash(tmp_path):
    paths = [tmp_path / "x" / "run.h5", tmp_path / "y" / "run.h5", tmp_path / "z.h5"]
    assert labels_of(paths, [{}, {}, {"label": "new"}]) == [str(paths[0]), str(paths[1]), "new"]


def test_the_report_is_written_self_contained(runs, tmp_path):
    a, b, _ = runs
    out = tmp_path / "report"
    proc = run_cli([a, b, "--out", out], module="mpibench.analyze")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 configurations over 2 runs (partition-a, partition-b)" in proc.stdout
    md = (out / "report.md").read_text()
    assert "| configuration | partition-a samples/s [95 % CI] | partition-b samples/s [95 % CI] |" in md
    assert "(slower, 95 % CIs apart)" in md
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 2 == len(list(out.glob("*.png")))
    for src in images:  # every figure inline: the page opens anywhere, offline, with nothing beside it
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"<script|<link|\bsrc=\"(?!data:)|url\(", html)


def _without_scenario(path, schema=2):
    """An older run file: no scenario column (every configuration was offline then)."""
    with h5py.File(path, "r+") as f:
        del f["tasks/scenario"]
        f.attrs["schema_version"] = schema
    return path


def test_an_older_run_is_matched_on_what_it_records(tmp_path):
    a = S.write(tmp_path / "new.h5", S.sweep(seed=1, batch_sizes=(1, 2)))
    old = _without_scenario(S.write(tmp_path / "old.h5", S.sweep(seed=2, batch_sizes=(1, 2))))
    r = analyze_runs([a, old])
    assert "scenario" not in r.columns and len(r.rows) == 4
    assert all(None not in rows for rows in r.rows.values())


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path):
    a, b, _ = runs
    server = S.sweep(seed=4, batch_sizes=(1, 2))
    for row, _ in server[:2]:
        row["scenario"] = "server"
    varied = S.write(tmp_path / "varied.h5", server)
    old = _without_scenario(S.write(tmp_path / "old.h5", S.sweep(seed=5, batch_sizes=(1, 2))))
    text = tmp_path / "notes.txt"
    text.write_text("not a run\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = {
        "not a run": ([a, text], "notes.txt"),
        "missing": ([a, tmp_path / "nope.h5"], "no such file"),
        "unmatched schemas": ([varied, old], "varies scenario, which"),
        "given twice": ([a, a], "given twice"),
        "unwritable output": ([a, b, "--out", blocker / "sub"], "--out"),
        "slo with several": ([a, b, "--latency-slo-ms", "5"], "--latency-slo-ms applies to one run"),
    }
    for name, (args, needle) in cases.items():
        proc = run_cli(args if "--out" in map(str, args) else [*args, "--out", tmp_path / f"out-{len(name)}"],
                       module="mpibench.analyze")
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert blocker.read_text() == "" and not list(tmp_path.glob("out-*"))


@pytest.mark.mpi
def test_a_label_given_at_run_time_names_the_run(tmp_path):
    out = tmp_path / "labelled.h5"
    proc = run_cli(["--config", TINY, "--batch-sizes", "1", "--precisions", "fp32", "--max-time", "0.5",
                    "--label", "before", "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_attrs(out)["label"] == "before"
    other = S.write(tmp_path / "after.h5", S.sweep(seed=1, batch_sizes=(1,), precisions=("fp32",)))
    r = analyze_runs([out, other])
    assert r.labels == ["before", "after.h5"]
    assert np.isfinite(r.analyses[0].tasks["throughput_sps"][r.analyses[0].rows]).all()
