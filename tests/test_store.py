"""The HDF5 store: round trip, crash safety (SIGKILL mid-run), refusing foreign files."""

import math
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mpibench.errors import UsageError
from mpibench.stats import PHASES
from mpibench.store import TASK_COLUMNS, JsonlWriter, Store, open_run, read_attrs, read_hosts, read_raw, read_tasks

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
    assert attrs["config_yaml"] == "a: 1\n" and attrs["complete"] and attrs["schema_version"] == 1


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(b"precious")
    with pytest.raises(UsageError):
        Store.create(path, {}, [])
    assert path.read_bytes() == b"precious"


def test_sigkill_keeps_every_flushed_result(tmp_path):
    path = tmp_path / "killed.h5"
    code = textwrap.dedent(f"""
        import os, numpy as np
        from mpibench.store import Store
        from mpibench.stats import PHASES
        s = Store.create({str(path)!r}, {{}}, [])
        for i in range(7):
            s.append({{"task_id": i, "status": "ok", "n_iters": 4}}, {{p: np.full(4, i) for p in PHASES}})
        os.kill(os.getpid(), 9)
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
