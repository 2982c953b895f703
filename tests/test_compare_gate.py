"""`analyze --compare BASE NEW` fails closed: what BASE measured and NEW did not is a failure, named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, mpi_env
from mpibench.analysis import synthetic as S
from mpibench.analysis.compare import compare_runs, failures
from mpibench.analyze import main
from mpibench.store import read_tasks

KEYS = ("model", "device", "precision", "batch_size", "seq_len", "threads")
LABEL = {bs: f"cpu fp32 bs={bs} seq=128 threads=4" for bs in (1, 2, 4)}


def sweep(**kw):
    return S.sweep(precisions=("fp32",), batch_sizes=(1, 2, 4), n=120, **kw)


def without_result(rows, batch_size: int, status: str):
    """`rows` with the configuration of `batch_size` now `status` (no samples)."""
    out = []
    for row, raw in rows:
        if row["batch_size"] == batch_size:
            row = S.task_row(row["task_id"], {k: row[k] for k in KEYS}, None, status=status,
                             message=f"rank 1 on node001: {status} here")
            raw = None
        out.append((row, raw))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return S.write(tmp_path_factory.mktemp("gate") / "base.h5", sweep())


def gate(capsys, base, new) -> tuple[int, str]:
    code = main(["--compare", str(base), str(new)])
    return code, capsys.readouterr().out


def failing_lines(out: str) -> list[str]:
    """The lines after the verdict that name each failing configuration."""
    return [line.strip() for line in out.splitlines() if line.startswith("  ")]


def test_the_same_run_passes(capsys, base):
    code, out = gate(capsys, base, base)
    assert code == 0 and "no configuration regressed" in out and not failing_lines(out)


@pytest.mark.parametrize("status", ["unavailable", "interrupted", "failed", "oom"])
def test_a_configuration_now_without_a_result_fails_and_is_named(capsys, tmp_path, base, status):
    new = S.write(tmp_path / "new.h5", without_result(sweep(), 2, status))
    code, out = gate(capsys, base, new)
    assert code == 1
    named = failing_lines(out)
    assert len(named) == 1 and named[0].startswith(LABEL[2] + ":") and status in named[0], out
    assert f"{status} here" in named[0]  # the reason the new run gives


def test_a_configuration_missing_from_the_new_run_fails(capsys, tmp_path, base):
    new = S.write(tmp_path / "new.h5", [r for r in sweep() if r[0]["batch_size"] != 4])
    code, out = gate(capsys, base, new)
    assert code == 1 and failing_lines(out) == [f"{LABEL[4]}: missing in new run"], out


def test_a_new_run_without_rows_fails_naming_every_configuration(capsys, tmp_path, base):
    new = S.write(tmp_path / "empty.h5", [])
    assert len(read_tasks(new)["task_id"]) == 0
    code, out = gate(capsys, base, new)
    assert code == 1 and failing_lines(out) == [f"{LABEL[bs]}: missing in new run" for bs in (1, 2, 4)], out
    assert "3 of 3 configurations" in out


def test_a_killed_new_run_fails_for_what_it_did_not_reach(capsys, tmp_path, base):
    new = S.write(tmp_path / "killed.h5", sweep()[:1], complete=False)
    code, out = gate(capsys, base, new)
    assert code == 1 and [line.split(":")[0] for line in failing_lines(out)] == [LABEL[2], LABEL[4]], out


def test_what_the_base_run_did_not_measure_never_decides(capsys, tmp_path):
    base = S.write(tmp_path / "base.h5", without_result(sweep(), 2, "unavailable"))
    for new_rows in (sweep(),                                      # now measured: fine
                     without_result(sweep(), 2, "unavailable"),    # still not
                     [r for r in sweep() if r[0]["batch_size"] != 2]):  # gone
        new = S.write(tmp_path / "new.h5", new_rows)
        code, out = gate(capsys, base, new)
        assert code == 0 and not failing_lines(out), out


def test_a_new_configuration_never_decides(capsys, tmp_path):
    base = S.write(tmp_path / "base.h5", [r for r in sweep() if r[0]["batch_size"] != 4])
    code, out = gate(capsys, base, S.write(tmp_path / "new.h5", sweep()))
    assert code == 0 and "new configuration" in out


def test_a_resumed_run_counts_its_final_row(capsys, tmp_path, base):
    """An interrupted row followed by the ok row of its resume is a result."""
    rows = sweep()
    interrupted = without_result(rows, 2, "interrupted")
    new = S.write(tmp_path / "resumed.h5", interrupted + [r for r in rows if r[0]["batch_size"] == 2])
    code, out = gate(capsys, base, new)
    assert code == 0, out


def test_a_regression_still_fails_and_an_improvement_passes(capsys, tmp_path, base):
    slow = S.write(tmp_path / "slow.h5", sweep(slowdown={("cpu", "fp32", 4): 1.5}))
    code, out = gate(capsys, base, slow)
    assert code == 1 and len(failing_lines(out)) == 1 and failing_lines(out)[0].startswith(f"{LABEL[4]}: regressed")
    code, out = gate(capsys, slow, base)
    assert code == 0 and "improved" in out


def test_compare_runs_on_hand_built_tables():
    t = {"model": ["m", "m"], "device": ["cpu", "cpu"], "precision": ["fp32", "fp32"], "batch_size": [1, 2],
         "seq_len": [128, 128], "threads": [4, 4], "status": ["ok", "ok"], "e2e_p50_ms": [1.0, 2.0]}
    base = {k: np.array(v) for k, v in t.items()}
    empty = {k: v[:0] for k, v in base.items()}
    rows = compare_runs(base, empty)
    assert [r["verdict"] for r in failures(rows)] == ["missing in new run"] * 2
    assert not failures(compare_runs(empty, base))


def test_the_command_line_exits_1_on_an_empty_new_run(tmp_path, base):
    new = S.write(tmp_path / "empty.h5", [])
    proc = subprocess.run([sys.executable, "-m", "mpibench.analyze", "--compare", str(base), str(new)],
                          capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and not proc.stderr, proc.stderr
    assert LABEL[1] in proc.stdout and "missing in new run" in proc.stdout
