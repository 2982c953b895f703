"""Cluster behaviour under a real mpirun: failures as rows, a killed rank, signals, --resume."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, mpi_env, rank_pids, run_cli
from mpibench.recorder import FINAL
from mpibench.store import read_attrs, read_tasks

pytestmark = pytest.mark.mpi


def start(args, n):
    cmd = ["mpirun", "--oversubscribe", "-n", str(n), sys.executable, "-m", "mpibench.run", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mpi_env(),
                            cwd=ROOT, start_new_session=True)


def wait_rows(path: Path, n: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if len(read_tasks(path)["task_id"]) >= n:
                return
        except Exception:  # not created yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} rows in {path} after {timeout} s")


def launcher_pid(proc: subprocess.Popen) -> int:
    return proc.pid  # mpirun execs prterun in place


def wait_gone(pids, timeout: float = 60) -> None:
    """Wait until these processes have ended (zombies count as ended)."""
    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    t0 = time.monotonic()
    while any(map(alive, pids)):
        assert time.monotonic() - t0 < timeout, f"ranks {pids} still running {timeout} s after mpirun ended"
        time.sleep(0.1)


def one_final_row_per_task(path: Path, n_planned: int) -> dict:
    t = read_tasks(path)
    final = [int(i) for i, s in zip(t["task_id"], t["status"]) if s in FINAL]
    assert sorted(final) == list(range(n_planned)), (t["task_id"], t["status"])
    return t


SLOW = ["--min-time", "1.5", "--max-time", "2", "--batch-sizes", "1,2,4,8"]  # 8 tasks, ~2 s each
# 16 tasks of ~2 s on two workers: a signal sent once the first rows are readable (rows are committed
# in groups, up to a second late) lands with many tasks still queued, however fast the machine
LONG = ["--min-time", "1.5", "--max-time", "2", "--batch-sizes", "1,2,4,8,16,32,64,128"]


def test_a_raising_task_is_a_row_and_the_sweep_goes_on(tmp_path):
    model = tmp_path / "short-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "distilbert", "n_layers": 1, "dim": 32,
                                                   "hidden_dim": 64, "n_heads": 2, "max_position_embeddings": 32}))
    out = tmp_path / "fail.h5"
    proc = run_cli(["--config", TINY, "--model", model, "--seq-lens", "16,64", "--batch-sizes", "1",
                    "--precisions", "fp32", "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    by_seq = {int(s): (st, m) for s, st, m in zip(t["seq_len"], t["status"], t["message"])}
    assert by_seq[16][0] == "ok"
    status, message = by_seq[64]
    assert status == "failed" and message.startswith("rank ") and " on " in message, message
    assert "FAILED" in proc.stdout


def test_sigkill_of_a_worker_ends_the_job_and_keeps_the_rows(tmp_path):
    out = tmp_path / "kill.h5"
    proc = start(["--config", TINY, *SLOW, "--output", out], n=3)
    wait_rows(out, 2)
    t0 = time.monotonic()
    os.kill(rank_pids(out)[1], signal.SIGKILL)
    proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 60
    assert proc.returncode != 0
    t = read_tasks(out)  # readable although its writer may have been killed
    assert len(t["task_id"]) >= 2
    assert set(t["status"]) <= {"ok", "interrupted"}
    done = run_cli(["--resume", out], n=3)
    assert done.returncode == 0, done.stdout + done.stderr
    one_final_row_per_task(out, 8)
    assert read_attrs(out)["complete"]


@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGTERM"])
def test_signal_then_resume_gives_one_final_row_per_task(tmp_path, sig):
    out = tmp_path / f"{sig}.h5"
    proc = start(["--config", TINY, *LONG, "--output", out], n=3)
    wait_rows(out, 2)
    pids = rank_pids(out)
    if sig == "SIGTERM":  # rank 0 must not wait for workers: freeze them, so the sweep cannot end first
        for rank, pid in pids.items():
            if rank:
                os.kill(pid, signal.SIGSTOP)
    os.kill(launcher_pid(proc), getattr(signal, sig))
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    wait_gone([pids[0]])  # mpirun may exit first: rank 0 may still be recording what was in flight
    for pid in rank_pids(out).values():  # a worker left frozen by a launcher that did not wait for it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    t = read_tasks(out)
    assert 2 <= len(t["task_id"]) < 16
    if sig == "SIGTERM":  # what the frozen workers were measuring is a row, not lost
        assert "interrupted" in set(t["status"]), t["status"]
    if sig == "SIGUSR1":  # forwarded by mpirun: rank 0 closes the file itself and says how to go on
        assert proc.returncode == 3
        assert "--resume" in stdout
        attrs = read_attrs(out)
        assert attrs["stopped_by"] == "SIGUSR1" and not attrs["complete"]
    final = sum(s in FINAL for s in t["status"])
    plan = run_cli(["--resume", out, "--dry-run"])  # the file's remaining tasks, not a default plan
    assert f"{16 - final} task(s) left to measure" in plan.stdout, plan.stdout
    assert sum(line.lstrip().startswith("task ") for line in plan.stdout.splitlines()) == 16 - final
    other = tmp_path / "other.h5"
    refused = run_cli(["--resume", out, "--batch-sizes", "999", "--output", other])
    assert refused.returncode == 2 and "--batch-sizes, --output would change it" in refused.stderr
    assert not other.exists() and len(read_tasks(out)["task_id"]) == len(t["task_id"])
    done = run_cli(["--resume", out], n=3)
    assert done.returncode == 0, done.stdout + done.stderr
    one_final_row_per_task(out, 16)
    assert read_attrs(out)["complete"]
    if sig == "SIGUSR1":  # once is enough: resuming a finished file is a no-op, not a duplicate
        rows = len(read_tasks(out)["task_id"])
        again = run_cli(["--resume", out], n=3)
        assert again.returncode == 0 and "0 of 16 tasks left" in again.stdout
        assert len(read_tasks(out)["task_id"]) == rows


def test_a_signal_that_reaches_one_worker_only_stops_the_run(tmp_path):
    out = tmp_path / "worker-signal.h5"
    proc = start(["--config", TINY, *LONG, "--output", out], n=3)
    wait_rows(out, 1)
    os.kill(rank_pids(out)[2], signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, stdout
    attrs = read_attrs(out)
    assert attrs["stopped_by"] == "SIGUSR1 on rank 2" and not attrs["complete"]
    t = read_tasks(out)
    assert "interrupted" in set(t["status"]) and sum(s in FINAL for s in t["status"]) < 16


FROZEN = ["--model", "synthetic", "--batch-sizes", "1,2,4,8,16,32", "--seq-lens", "4000", "--min-time", "1",
          "--max-time", "1.5", "--warmup-s", "0", "--energy-idle-s", "0"]  # 6 tasks of ~1 s


def test_a_frozen_worker_costs_only_its_task(tmp_path):
    out = tmp_path / "frozen.h5"
    proc = start([*FROZEN, "--task-timeout", "4", "--output", out], n=3)
    wait_rows(out, 1)
    frozen = rank_pids(out)[1]
    os.kill(frozen, signal.SIGSTOP)
    try:
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.kill(frozen, signal.SIGCONT) if Path(f"/proc/{frozen}").exists() else None
    assert proc.returncode == 5, stdout  # the rest measured, then MPI_Abort: the frozen rank cannot exit
    t = one_final_row_per_task(out, 6)
    failed = [m for s, m in zip(t["status"], t["message"]) if s == "failed"]
    assert len(failed) == 1 and failed[0].startswith("rank 1 on ") and failed[0].endswith("no answer for 4 s")
    assert read_attrs(out)["complete"]
    assert "lost rank 1 on " in stdout


def test_sigusr1_ends_a_job_whose_worker_is_frozen(tmp_path):
    out = tmp_path / "frozen-stop.h5"
    proc = start([*FROZEN, "--stop-grace-s", "3", "--output", out], n=3)  # the default task timeout: minutes
    wait_rows(out, 1)
    frozen = rank_pids(out)[1]
    os.kill(frozen, signal.SIGSTOP)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(launcher_pid(proc), signal.SIGUSR1)
        stdout, _ = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        os.kill(frozen, signal.SIGCONT) if Path(f"/proc/{frozen}").exists() else None
    assert proc.returncode == 3, stdout
    assert took < 3 + 60  # the grace period, then MPI_Abort (generous: a busy machine is slow to start)
    attrs = read_attrs(out)
    assert attrs["stopped_by"] == "SIGUSR1" and not attrs["complete"]
    t = read_tasks(out)
    assert any(s == "interrupted" and m.startswith("rank 1 on ") for s, m in zip(t["status"], t["message"]))


@pytest.mark.parametrize("n, sig", [(None, "SIGTERM"), pytest.param(3, "SIGUSR1", marks=pytest.mark.mpi)],
                         ids=["1rank", "mpirun3"])
def test_a_stop_reaches_a_server_waiting_for_arrivals(tmp_path, n, sig):
    out = tmp_path / "server.h5"
    args = ["--model", "synthetic", "--batch-sizes", "1", "--seq-lens", "100", "--scenarios", "offline,server",
            "--rates-sps", "2.2", "--min-time", "0.2", "--max-time", "30", "--warmup-s", "0",
            "--energy-idle-s", "0", "--output", out]  # task 0 short, task 1 a 30-s server run at 2.2 requests/s
    if n is None:
        proc = subprocess.Popen([sys.executable, "-m", "mpibench.run", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=mpi_env(), cwd=ROOT)
    else:
        proc = start(args, n=n)
    wait_rows(out, 1)
    time.sleep(2)  # the server's warm-up (1 s) is over: it waits between arrivals
    t0 = time.monotonic()
    os.kill(proc.pid, getattr(signal, sig))
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, stdout
    assert time.monotonic() - t0 < 25  # well before the 30-s run would have ended
    t = read_tasks(out)
    assert list(t["status"]) == ["ok", "interrupted"] and t["scenario"][1] == "server"


def test_sigusr1_stops_a_scaling_run_between_steps(tmp_path):
    out = tmp_path / "scaling-stop.h5"
    proc = start(["--model", "synthetic", "--mode", "scaling", "--batch-sizes", "1,2,4,8", "--min-time", "1",
                  "--max-time", "1.5", "--warmup-s", "0", "--energy-idle-s", "0", "--output", out], n=4)
    wait_rows(out, 1)
    os.kill(launcher_pid(proc), signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, stdout
    attrs = read_attrs(out)
    assert attrs["stopped_by"] == "SIGUSR1" and not attrs["complete"]
    from mpibench.store import read_scaling
    assert len(read_scaling(out)["status"]) < 4 * 3  # 4 tasks x 3 rank counts planned


def test_serial_run_stops_on_sigterm(tmp_path):
    out = tmp_path / "serial.h5"
    proc = subprocess.Popen([sys.executable, "-m", "mpibench.run", "--config", str(TINY), *SLOW, "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mpi_env(), cwd=ROOT)
    wait_rows(out, 1)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, stdout
    t = read_tasks(out)
    assert t["status"][-1] == "interrupted"
    assert read_attrs(out)["stopped_by"] == "SIGTERM"


def test_scaling_mode_tiny_model_on_four_ranks(tmp_path):
    out = tmp_path / "scaling.h5"
    proc = run_cli(["--config", TINY, "--batch-sizes", "2", "--precisions", "fp32", "--min-time", "0.5",
                    "--mode", "scaling", "--output", out], n=5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from mpibench.store import read_scaling

    s = read_scaling(out)
    assert list(s["n_ranks"]) == [1, 2, 4] and set(s["by"]) == {"ranks"}
    assert s["efficiency"][0] == pytest.approx(1.0)
    assert all(0 < e <= 1.5 for e in s["efficiency"]), s["efficiency"]
    assert (s["aggregate_throughput_sps"] > 0).all()
    t = read_tasks(out)  # every participant's own measurement is kept too
    assert sorted(t["scaling_ranks"]) == [1, 2, 2, 4, 4, 4, 4]


def test_isolation_node_measures_one_rank_at_a_time(tmp_path):
    out = tmp_path / "iso.h5"
    proc = run_cli(["--model", "synthetic", "--batch-sizes", "1,2,4,8,16,32", "--seq-lens", "64",
                    "--warmup-s", "0", "--min-time", "0.2", "--isolation", "node", "--output", out], n=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    assert len(set(t["rank"])) > 1
    windows = sorted(zip(t["start_time"], t["end_time"]))
    for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
        assert s2 >= e1 - 0.01, "two ranks of one node measured at the same time"
    assert len(set(t["cores"])) == 1  # each measuring rank may use the whole node
    assert "isolation: node" in read_attrs(out)["config_yaml"]


def test_device_isolation_gives_disjoint_core_slices(tmp_path):
    out = tmp_path / "slices.h5"
    proc = run_cli(["--model", "synthetic", "--batch-sizes", "1,2,4,8", "--seq-lens", "64", "--warmup-s", "0",
                    "--min-time", "0.1", "--threads", "0", "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    by_rank = {int(r): c for r, c in zip(t["rank"], t["cores"])}
    if (os.cpu_count() or 1) >= 2 and len(by_rank) == 2:
        a, b = (set(by_rank[r].split(",")) for r in sorted(by_rank))
        assert not a & b, by_rank


SYNTHETIC = ["--model", "synthetic", "--batch-sizes", "1", "--seq-lens", "64", "--warmup-s", "0", "--min-time", "0.2"]


def test_scaling_overwrite_starts_the_jsonl_again(tmp_path):
    out, jsonl = tmp_path / "scaling.h5", tmp_path / "scaling.jsonl"
    out.write_bytes(b"last week")
    jsonl.write_text('{"task_id": 99, "stale": true}\n')
    proc = run_cli([*SYNTHETIC, "--mode", "scaling", "--output", out, "--jsonl", jsonl, "--overwrite"], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == len(read_tasks(out)["task_id"]) == 3  # 1 rank, then 2 ranks at once
    assert all("stale" not in x for x in lines)
