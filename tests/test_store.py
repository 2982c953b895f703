"""The HDF5 store: round trip, crash safety (SIGKILL mid-run), refusing foreign files."""

import math
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mpibench import SCHEMA_VERSION
from mpibench.errors import UsageError
from mpibench.stats import PHASES
from mpibench.recover import recover
from mpibench.store import (TASK_COLUMNS, JsonlWriter, Store, open_run, read_attrs, read_energy_trace, read_hosts,
                            read_raw, read_tasks)

HOST = {"host": "n1", "cpu_model": "X", "cores": 2, "memory_gib": 4.0, "gpus": "[]", "ranks": "0,1"}


def raw(n, seed):
    rng = np.random.default_rng(seed)
    return {p: rng.integers(1, 10_000, n) for p in PHASES}


def test_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    s = Store.create(path, {"config_yaml": "a: 1\n", "world_size": 4}, [HOST])
    r1, r2 = raw(5, 1), raw(3, 2)
    s.append({"task_id": 0, "model": "m", "status": "ok", "message": "", "throughput_sps": 12.5,
              "converged": True, "n_iters": 5}, r1)
    s.append({"task_id": 1, "model": "m", "status": "failed", "message": "rank 1 on n1: boom é"}, None)
    s.append({"task_id": 2, "model": "m", "status": "ok", "n_iters": 3}, r2)
    s.close()

    t = read_tasks(path)
    assert set(t) == {c[0] for c in TASK_COLUMNS}
    assert list(t["task_id"]) == [0, 1, 2]
    assert list(t["status"]) == ["ok", "failed", "ok"]
    assert t["message"][1] == "rank 1 on n1: boom é"
    assert t["throughput_sps"][0] == 12.5 and math.isnan(t["throughput_sps"][1])
    assert list(t["raw_count"]) == [5, 0, 3]
    back = read_raw(path, int(t["raw_offset"][2]), int(t["raw_count"][2]))
    for p in PHASES:
        np.testing.assert_array_equal(back[p], r2[p])
    assert read_hosts(path)["host"][0] == "n1"
    attrs = read_attrs(path)
    assert attrs["config_yaml"] == "a: 1\n" and attrs["complete"] and attrs["schema_version"] == SCHEMA_VERSION


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(b"precious")
    with pytest.raises(UsageError):
        Store.create(path, {}, [])
    assert path.read_bytes() == b"precious"


def test_sigkill_keeps_every_committed_result(tmp_path):
    path = tmp_path / "killed.h5"
    code = textwrap.dedent(f"""
        import os, numpy as np
        from mpibench.store import Store
        from mpibench.stats import PHASES
        s = Store.create({str(path)!r}, {{}}, [])
        for i in range(7):
            s.append({{"task_id": i, "status": "ok", "n_iters": 4}}, {{p: np.full(4, i) for p in PHASES}})
            s.commit()
        s.append({{"task_id": 7, "status": "ok", "n_iters": 4}}, {{p: np.full(4, 7) for p in PHASES}})
        os.kill(os.getpid(), 9)  # the last result was never committed
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    t = read_tasks(path)
    assert list(t["task_id"]) == list(range(7))
    assert read_raw(path, int(t["raw_offset"][6]), 4)["forward"].tolist() == [6] * 4
    assert not read_attrs(path)["complete"]


def test_foreign_and_newer_files_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(UsageError, match="not an mpibench results file"):
        open_run(other)
    text = tmp_path / "t.h5"
    text.write_text("hello")
    with pytest.raises(UsageError, match="not an HDF5 file"):
        open_run(text)
    newer = tmp_path / "newer.h5"
    Store.create(newer, {}, []).close()
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(UsageError, match="schema version 99"):
        open_run(newer)


def test_jsonl_writes_nan_as_null(tmp_path):
    w = JsonlWriter(tmp_path / "x.jsonl")
    w.write({"a": float("nan"), "b": np.int64(3)})
    w.close()
    assert (tmp_path / "x.jsonl").read_text() == '{"a": null, "b": 3}\n'


def test_energy_trace_is_written_column_wise_with_missing_values(tmp_path):
    path = tmp_path / "e.h5"
    s = Store.create(path, {}, [HOST])
    trace = [(1.0 + i, "cpu-package-0" if i % 2 else "gpu-x", float(i)) for i in range(1200)]
    s.append({"task_id": 0, "status": "ok", "host": "n1", "rank": 1, "n_iters": 2}, raw(2, 0), trace)
    s.append({"task_id": 1, "status": "failed"}, None, [(5.0, "dram-0", 7.0)])  # no host, no rank
    with pytest.raises(KeyError, match="unknown columns"):
        s.append({"task_id": 2, "nonsense": 1})
    s.close()
    e = read_energy_trace(path)
    assert len(e["time_s"]) == 1201
    assert list(e["time_s"][:1200]) == [t for t, _, _ in trace]
    assert list(e["domain"][:3]) == ["gpu-x", "cpu-package-0", "gpu-x"]
    assert set(e["task_id"][:1200]) == {0} and set(e["host"][:1200]) == {"n1"}
    assert (e["host"][1200], e["rank"][1200], e["task_id"][1200], e["value_j"][1200]) == ("", -1, 1, 7.0)
    assert list(read_tasks(path)["task_id"]) == [0, 1]  # the refused row wrote nothing


def test_append_many_writes_what_append_writes(tmp_path):
    rows = [{"task_id": 0, "status": "ok", "n_iters": 5, "throughput_sps": 1.5},
            {"task_id": 1, "status": "failed", "message": "rank 1 on n1: boom", "throughput_sps": None},
            {"task_id": 2, "status": "ok", "n_iters": 3, "converged": True}]
    raws = [raw(5, 1), None, raw(3, 2)]
    one, many = Store.create(tmp_path / "one.h5", {}, [HOST]), Store.create(tmp_path / "many.h5", {}, [HOST])
    for r, x in zip(rows, raws):
        one.append(r, x)
    many.append_many(rows[:1], raws[:1])
    many.append_many(rows[1:], raws[1:])
    one.close(), many.close()
    a, b = read_tasks(tmp_path / "one.h5"), read_tasks(tmp_path / "many.h5")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert list(b["raw_offset"]) == [0, 5, 5] and list(b["raw_count"]) == [5, 0, 3]
    np.testing.assert_array_equal(read_raw(tmp_path / "many.h5", 5, 3)["forward"], raws[2]["forward"])


def test_recover_trims_every_table_to_whole_rows(tmp_path):
    path = tmp_path / "uneven.h5"
    s = Store.create(path, {}, [HOST])
    s.append({"task_id": 0, "status": "ok", "n_iters": 2, "host": "n1", "rank": 1}, raw(2, 0),
             [(1.0, "cpu-package-0", 10.0), (2.0, "cpu-package-0", 11.0)])
    s.close()
    with h5py.File(path, "r+") as f:  # as a kill between two column writes of the trace leaves it
        for name in ("time_s", "domain"):
            f[f"energy/{name}"].resize((3,))
        f["hosts/host"].resize((2,))
    recover(path)
    with h5py.File(path, "r") as f:
        for group in ("energy", "hosts", "tasks", "scaling"):
            assert len({ds.shape[0] for ds in f[group].values()}) == 1, group
        assert f["energy/time_s"].shape == (2,) and f["hosts/host"].shape == (1,)
    s = Store.reopen(path)  # later appends line up again
    s.append({"task_id": 1, "status": "ok", "n_iters": 1, "host": "n1", "rank": 1}, raw(1, 1),
             [(3.0, "cpu-package-0", 12.0)])
    s.close()
    e = read_energy_trace(path)
    assert list(e["time_s"]) == [1.0, 2.0, 3.0] and list(e["task_id"]) == [0, 0, 1]


def test_jsonl_overwrite_starts_the_file_again(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"old": 1}\n')
    w = JsonlWriter(path)
    w.write({"a": 1})
    w.close()
    assert path.read_text() == '{"old": 1}\n{"a": 1}\n'  # --resume continues it
    w = JsonlWriter(path, overwrite=True)
    w.write({"b": 2})
    w.close()
    assert path.read_text() == '{"b": 2}\n'


def test_a_schema_1_file_with_variable_length_strings_still_reads(tmp_path):
    """Files written before strings were fixed-size (schema 1) read and analyse as before."""
    from mpibench.analysis import analyze

    path = tmp_path / "v1.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "mpibench", "schema_version": 1, "complete": True, "config_yaml": "{}"})
        tasks = f.create_group("tasks")
        rows = [{"task_id": i, "model": "m", "device": "cpu", "precision": "fp32", "batch_size": 2 ** i,
                 "seq_len": 8, "threads": 1, "status": "ok", "host": "n1", "e2e_p50_ms": 1.0 + i,
                 "e2e_ci_low_ms": 0.9 + i, "e2e_ci_high_ms": 1.1 + i, "converged": True} for i in range(3)]
        for name in rows[0]:
            values = [r[name] for r in rows]
            kind = h5py.string_dtype("utf-8") if isinstance(values[0], str) else None
            tasks.create_dataset(name, data=values, dtype=kind, maxshape=(None,))
        f.create_group("hosts").create_dataset("host", data=["n1"], dtype=h5py.string_dtype("utf-8"))
    t = read_tasks(path)
    assert list(t["status"]) == ["ok"] * 3 and list(t["batch_size"]) == [1, 2, 4]
    assert read_attrs(path)["schema_version"] == 1
    a = analyze(path)
    assert len(a.rows) == 3


def test_a_schema_2_table_gets_the_figures_as_defined_now():
    """Schema 2 stored throughput_sps as batch / mean; the analysis reads it as batch / median, the
    server's as the rate it delivered, and judges a server by its requests' p99."""
    from mpibench.analysis.table import latency_p99, throughput_ci

    t = {"batch_size": np.array([4, 4]), "scenario": np.array(["offline", "server"]),
         "e2e_mean_ms": np.array([5.0, 2.0]), "e2e_p50_ms": np.array([4.0, 1.0]),
         "e2e_ci_low_ms": np.array([3.9, 0.9]), "e2e_ci_high_ms": np.array([4.1, 1.1]),
         "e2e_p99_ms": np.array([9.0, 3.0]), "server_p99_ms": np.array([np.nan, 40.0]),
         "throughput_sps": np.array([800.0, 19.4])}
    value, low, high = throughput_ci(t)
    assert value.tolist() == [1000.0, 19.4]  # 4 / 4 ms; the server's delivered rate, not 4 / 1 ms
    assert low[0] == pytest.approx(4e3 / 4.1) and high[0] == pytest.approx(4e3 / 3.9)
    assert low[1] == high[1] == 19.4  # no CI: the point value
    assert latency_p99(t).tolist() == [9.0, 40.0]


def test_resume_refuses_a_file_of_an_older_schema(tmp_path):
    from conftest import run_cli

    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "mpibench", "schema_version": 2, "complete": False, "config_yaml": "{}"})
        f.create_group("tasks").create_dataset("task_id", data=[0], maxshape=(None,))
    before = path.read_bytes()
    proc = run_cli(["--resume", path])
    assert proc.returncode == 2 and "has schema version 2, from an older mpibench" in proc.stderr, proc.stderr
    assert path.read_bytes() == before
