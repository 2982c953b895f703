"""`python -m mpibench.export`: run files written by the project's writer, exported and read back with
pandas; every bad input refused in one line (exit 2) with nothing written and nothing lost."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, sha256
from mpibench.analysis import synthetic as S
from mpibench.export import main
from mpibench.result import TASK_COLUMNS
from mpibench.store import read_attrs, read_hosts, read_tasks

OLD_SCHEMA_LACKS = ("cold_ms", "warmup_iters")
NAMES = [c.name for c in TASK_COLUMNS]  # the schema's order, the export's
STRINGS = {c.name: str for c in TASK_COLUMNS if c.dtype == "str"}


def sweep_rows() -> list:
    """Two measured tasks (one with energy, one not converged) and one failed: NaNs, strings, booleans."""
    ok = S.sweep(batch_sizes=(1, 2), precisions=("fp32",), n=30, power_w=100.0)
    keys = ("model", "device", "precision", "batch_size", "seq_len", "threads")
    (row, raw) = ok[1]
    ok[1] = (S.task_row(1, {k: row[k] for k in keys}, raw, converged=False), raw)
    cfg = {k: row[k] for k in keys}
    failed = S.task_row(2, {**cfg, "batch_size": 64}, None, status="oom",
                        message='rank 1: out of memory, "batch 64", tried twice\nsee log')
    return [*ok, (failed, None)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A run file, and one of an older schema (without some /tasks columns) on two nodes."""
    d = tmp_path_factory.mktemp("runs")
    new = S.write(d / "new.h5", sweep_rows(), world_size=4)
    old = S.write(d / "old.h5", S.sweep(batch_sizes=(4,), precisions=("bf16",), n=30), n_hosts=2)
    with h5py.File(old, "a") as f:
        for name in OLD_SCHEMA_LACKS:
            del f[f"tasks/{name}"]
    return new, old


def export(*args) -> int:
    return main([str(a) for a in args])


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, true_values=["true"], false_values=["false"], dtype=STRINGS)


def assert_frame_is_tasks(df: pd.DataFrame, tasks: dict[str, np.ndarray]) -> None:
    """The frame holds exactly the /tasks table, in the schema's column order; an empty string may read as NaN."""
    assert list(df.columns) == [n for n in NAMES if n in tasks] + [n for n in tasks if n not in NAMES]
    for name, values in tasks.items():
        got = df[name].tolist()
        if values.dtype.kind == "f":
            # NaN where NaN; pandas 2 may parse a CSV float one unit in the last place off
            np.testing.assert_allclose(np.array(got, dtype=float), values, rtol=1e-15, err_msg=name)
        elif values.dtype.kind == "O":
            assert [("" if isinstance(v, float) and math.isnan(v) else v) for v in got] == list(values), name
        else:
            assert got == values.tolist(), name


def test_csv_of_one_run_reads_back_as_read_tasks(runs, tmp_path):
    new, _ = runs
    out = tmp_path / "out.csv"
    proc = run_cli([new, "--format", "csv", "--out", out], module="mpibench.export")
    assert proc.returncode == 0, proc.stderr
    assert_frame_is_tasks(read_csv(out), read_tasks(new))
    with open(out, newline="") as fh:
        fields = list(csv.DictReader(fh))
    assert [r["converged"] for r in fields] == ["true", "false", "false"]
    assert fields[2]["energy_j"] == "" and float(fields[0]["energy_j"]) > 0  # NaN: an empty field
    assert fields[2]["message"] == 'rank 1: out of memory, "batch 64", tried twice\nsee log'
    assert "run" not in fields[0]
    hosts = pd.read_csv(tmp_path / "out.hosts.csv", keep_default_na=False)
    assert hosts.host.tolist() == list(read_hosts(new)["host"]) and hosts.ranks[0] == "0,1,2,3"
    attrs = json.loads((tmp_path / "out.attrs.json").read_text())
    assert list(attrs) == [str(new)] and attrs[str(new)] == json.loads(json.dumps(read_attrs(new)))
    assert attrs[str(new)]["world_size"] == 4 and attrs[str(new)]["complete"] is True


def test_two_runs_get_a_run_column_and_the_union_of_columns(runs, tmp_path):
    new, old = runs
    out = tmp_path / "both.csv"
    assert export(old, new, "--format", "csv", "--out", out) == 0
    df = read_csv(out)
    new_tasks = read_tasks(new)
    assert df.run.tolist() == [str(old)] + [str(new)] * 3
    first, then = [n for n in NAMES if n not in OLD_SCHEMA_LACKS], [n for n in NAMES if n in OLD_SCHEMA_LACKS]
    assert list(df.columns) == ["run", *first, *then]  # the first run's columns, then those new in the next
    assert df.cold_ms.isna().tolist() == [True, False, False, True]  # the old run has none; the failed task NaN
    assert df.cold_ms[1:3].tolist() == new_tasks["cold_ms"][:2].tolist()
    assert df.warmup_iters.isna().tolist() == [True, False, False, False]
    assert df.warmup_iters[1:].tolist() == [10, 10, -1]
    hosts = pd.read_csv(tmp_path / "both.hosts.csv")
    assert hosts.run.tolist() == [str(old)] * 2 + [str(new)] and hosts.host.tolist() == ["node001", "node002",
                                                                                             "node001"]
    assert list(json.loads((tmp_path / "both.attrs.json").read_text())) == [str(old), str(new)]


def test_jsonl_reads_back(runs, tmp_path):
    new, old = runs
    out = tmp_path / "out.jsonl"
    assert export(new, old, "--format", "jsonl", "--out", out) == 0
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # strict JSON: no NaN
    assert "NaN" not in out.read_text() and len(rows) == 4
    assert rows[0]["run"] == str(new) and rows[0]["converged"] is True and rows[2]["energy_j"] is None
    assert rows[3]["cold_ms"] is None and rows[3]["warmup_iters"] is None and rows[3]["run"] == str(old)
    assert isinstance(rows[0]["batch_size"], int) and rows[0]["throughput_sps"] == read_tasks(new)["throughput_sps"][0]
    df = pd.read_json(out, lines=True)
    assert df.columns[0] == "run" and len(df) == 4
    assert [json.loads(line)["run"] for line in (tmp_path / "out.hosts.jsonl").read_text().splitlines()] == \
        [str(new), str(old), str(old)]


def test_parquet_reads_back_with_pandas(runs, tmp_path):
    new, old = runs
    out = tmp_path / "out.parquet"
    assert export(new, "--format", "parquet", "--out", out) == 0
    assert_frame_is_tasks(pd.read_parquet(out), read_tasks(new))
    assert pd.read_parquet(tmp_path / "out.hosts.parquet").host.tolist() == ["node001"]
    both = tmp_path / "both.parquet"
    assert export(new, old, "--format", "parquet", "--out", both) == 0
    df = pd.read_parquet(both)
    assert df.run.tolist() == [str(new)] * 3 + [str(old)] and df.converged.tolist()[:3] == [True, False, False]
    assert df.cold_ms.isna().tolist() == [False, False, True, True]  # the failed task's NaN, then old's none
    assert df.warmup_iters.tolist()[:3] == [10, 10, -1] and df.warmup_iters.isna().tolist()[3]


def test_columns_chooses_and_orders(runs, tmp_path):
    new, old = runs
    assert export(new, "--format", "csv", "--out", tmp_path / "a.csv", "--columns", "status,task_id") == 0
    assert (tmp_path / "a.csv").read_text().splitlines() == ["status,task_id", "ok,0", "ok,1", "oom,2"]
    assert pd.read_csv(tmp_path / "a.hosts.csv").columns[0] == "host"  # the hosts table stays whole
    assert export(new, old, "--format", "csv", "--out", tmp_path / "b.csv", "--columns", "task_id, cold_ms") == 0
    assert (tmp_path / "b.csv").read_text().splitlines()[0] == "run,task_id,cold_ms"


def test_overwrite_replaces_all_three(runs, tmp_path):
    new, _ = runs
    out = tmp_path / "o.csv"
    assert export(new, "--format", "csv", "--out", out, "--columns", "task_id") == 0
    assert export(new, "--format", "csv", "--out", out, "--columns", "status", "--overwrite") == 0
    assert out.read_text().splitlines()[0] == "status"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.attrs.json", "o.csv", "o.hosts.csv"]  # no temporaries


def refused(capsys, *args) -> str:
    """The one line an export refused with (exit 2)."""
    assert export(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("kind", ["text", "foreign-hdf5", "missing"])
def test_what_is_not_a_run_is_refused(runs, tmp_path, capsys, kind):
    bad = tmp_path / "bad.h5"
    if kind == "text":
        bad.write_text("task_id,status\n0,ok\n")
    elif kind == "foreign-hdf5":
        with h5py.File(bad, "w") as f:
            f["tasks/x"] = [1, 2]
    err = refused(capsys, runs[0], bad, "--format", "csv", "--out", tmp_path / "out.csv")
    assert str(bad) in err and ("no such file" if kind == "missing" else "not") in err
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.hosts.csv").exists()


@pytest.mark.parametrize("existing", ["x.csv", "x.hosts.csv", "x.attrs.json"])
def test_an_existing_output_is_kept_byte_for_byte(runs, tmp_path, capsys, existing):
    (tmp_path / existing).write_text("mine, not yours\n")
    before = sha256(tmp_path / existing)
    err = refused(capsys, runs[0], "--format", "csv", "--out", tmp_path / "x.csv")
    assert existing in err and "--overwrite" in err
    assert sha256(tmp_path / existing) == before and [p.name for p in tmp_path.iterdir()] == [existing]


def test_an_unwritable_or_input_output_is_refused(runs, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    err = refused(capsys, runs[0], "--format", "csv", "--out", tmp_path / "file" / "x.csv")
    assert "cannot write to directory" in err
    err = refused(capsys, runs[0], "--format", "csv", "--out", tmp_path)
    assert "is a directory" in err
    copy = tmp_path / "run.csv"
    copy.write_bytes(runs[0].read_bytes())
    before = sha256(copy)
    err = refused(capsys, copy, "--format", "csv", "--out", copy, "--overwrite")
    assert "one of the runs" in err and sha256(copy) == before


def test_an_unknown_column_names_it_and_what_is_allowed(runs, tmp_path, capsys):
    err = refused(capsys, runs[0], "--format", "csv", "--out", tmp_path / "x.csv", "--columns", "task_id,thruput")
    assert "'thruput'" in err and "task_id, model, device" in err and "docs/results-file.md" in err
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_says_how_to_get_it(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` does where it is not installed
    err = refused(capsys, runs[0], "--format", "parquet", "--out", tmp_path / "x.parquet")
    assert err == "error: --format parquet needs pyarrow: pip install 'mpibench[parquet]'\n"
    assert list(tmp_path.iterdir()) == []


def test_bad_input_from_the_command_line_is_one_line(tmp_path):
    proc = run_cli([tmp_path / "nope.h5", "--format", "csv", "--out", tmp_path / "x.csv"], module="mpibench.export")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli(["--help"], module="mpibench.export", cwd=tmp_path)
    assert proc.returncode == 0 and "NAME.hosts.EXT" in proc.stdout and "NAME.attrs.json" in proc.stdout


@pytest.mark.mpi
def test_a_real_run_exports_and_reads_back(tiny_run_4, tmp_path):
    out = tmp_path / "tiny.csv"
    assert export(tiny_run_4, "--format", "csv", "--out", out) == 0
    assert_frame_is_tasks(read_csv(out), read_tasks(tiny_run_4))
    assert len(pd.read_csv(tmp_path / "tiny.hosts.csv")) == len(read_hosts(tiny_run_4)["host"])
    assert json.loads((tmp_path / "tiny.attrs.json").read_text())[str(tiny_run_4)]["world_size"] == 4
