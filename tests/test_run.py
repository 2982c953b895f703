"""The real CLI end to end: one rank, `mpirun -n 4`, and bad input on both (exit 2, nothing lost)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, run_cli, sha256
from mpibench.stats import PHASES
from mpibench.store import read_attrs, read_hosts, read_raw, read_tasks

EXPECTED_TASKS = 6  # configs/tiny.yaml: 3 batch sizes x 2 precisions

REQUIRED = ("task_id model device precision batch_size seq_len threads rank host status message n_iters "
            "converged throughput_sps forward_throughput_sps e2e_mean_ms e2e_p50_ms e2e_p90_ms e2e_p99_ms "
            "e2e_ci_low_ms e2e_ci_high_ms preprocess_mean_ms h2d_mean_ms forward_mean_ms "
            "postprocess_mean_ms energy_j energy_status").split()


def check_tiny_file(path, expect_ranks):
    t = read_tasks(path)
    for col in REQUIRED:
        assert col in t, col
    assert sorted(t["task_id"]) == list(range(EXPECTED_TASKS))
    assert set(t["status"]) == {"ok"}, t["message"]
    assert set(t["rank"]) <= expect_ranks
    assert set(t["precision"]) == {"fp32", "bf16"}
    assert set(t["weights"]) == {"random-init"}
    for i in range(len(t["task_id"])):
        n = t["n_iters"][i]
        assert n >= 20 and t["raw_count"][i] == n
        raw = read_raw(path, int(t["raw_offset"][i]), int(n))
        e2e_ms = sum(raw[p] for p in PHASES) / 1e6
        assert np.isclose(e2e_ms.mean(), t["e2e_mean_ms"][i])
        assert t["throughput_sps"][i] == pytest.approx(t["batch_size"][i] / (t["e2e_p50_ms"][i] / 1e3))
        assert t["throughput_mean_sps"][i] == pytest.approx(t["batch_size"][i] / (t["e2e_mean_ms"][i] / 1e3))
        assert t["e2e_p50_ms"][i] <= t["e2e_p90_ms"][i] <= t["e2e_p99_ms"][i]
        assert t["e2e_ci_low_ms"][i] <= t["e2e_p50_ms"][i] <= t["e2e_ci_high_ms"][i]
        assert t["forward_mean_ms"][i] < t["e2e_mean_ms"][i]
        assert t["preprocess_mean_ms"][i] > 0  # real tokenisation takes time
    return t


def check_energy_honest(t):
    """This machine has no RAPL and no GPU: every energy value NaN with the reason, never 0."""
    for col in ("energy_j", "energy_cpu_j", "energy_dram_j", "energy_gpu_j", "j_per_sample"):
        assert np.isnan(t[col]).all(), col
    assert set(t["energy_status"]) == {"absent"}
    assert set(t["energy_method"]) == {"none"}


@pytest.mark.mpi
def test_mpirun_4_ranks(tiny_run_4):
    t = check_tiny_file(tiny_run_4, expect_ranks={1, 2, 3})
    assert len(set(t["rank"])) > 1, "tasks should spread over more than one worker"
    if not Path("/sys/class/powercap/intel-rapl:0").exists():
        check_energy_honest(t)
        assert set(read_hosts(tiny_run_4)["energy_status"]) == {"absent"}
    attrs = read_attrs(tiny_run_4)
    assert attrs["world_size"] == 4 and attrs["n_workers"] == 3 and attrs["complete"]
    assert "Open MPI" in attrs["mpi_library_version"]
    assert "distilbert-tiny" in attrs["config_yaml"]
    assert "torch" in json.loads(attrs["package_versions"])
    hosts = read_hosts(tiny_run_4)
    assert len(hosts["host"]) == 1 and hosts["ranks"][0] == "0,1,2,3"
    lines = tiny_run_4.with_suffix(".jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["task_id"] for x in lines) == list(range(EXPECTED_TASKS))


def test_one_rank_serial(tmp_path):
    out = tmp_path / "one.h5"
    proc = run_cli(["--config", TINY, "--output", out, "--batch-sizes", "1,2", "--precisions", "fp32"])
    assert proc.returncode == 0, proc.stderr
    t = read_tasks(out)
    assert list(t["task_id"]) == [0, 1] and set(t["rank"]) == {0}
    assert "Best batch size by throughput" in proc.stdout
    assert "[2/2]" in proc.stdout and "ETA" in proc.stdout


def test_overwrite_starts_the_jsonl_again(tmp_path):
    out, jsonl = tmp_path / "o.h5", tmp_path / "o.jsonl"
    jsonl.write_text('{"task_id": 99, "stale": true}\n')
    proc = run_cli(["--model", "synthetic", "--batch-sizes", "1,2", "--seq-lens", "64", "--warmup-s", "0",
                    "--min-time", "0.1", "--output", out, "--jsonl", jsonl, "--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(x)["task_id"] for x in jsonl.read_text().splitlines()) == [0, 1]
    assert "[2/2]" in proc.stdout


def test_measuring_ranks_leave_out_only_a_coordinating_rank_0():
    from mpibench.cluster.topology import Topology

    def topo(rank, size, node_ranks):
        return Topology(rank=rank, size=size, host="n", node=0, n_nodes=1, local_rank=node_ranks.index(rank),
                        local_size=len(node_ranks), node_ranks=node_ranks, cores=8, node_cores=tuple(range(8)))

    lead = topo(0, 4, (0, 1, 2))
    assert lead.measuring_node_ranks == (1, 2) and lead.measuring_ranks_on_node == 2
    assert lead.measuring_index == 0 and lead.default_threads() == 4
    assert topo(2, 4, (0, 1, 2)).measuring_index == 1
    assert topo(3, 4, (3,)).measuring_node_ranks == (3,)  # another node: every rank measures
    alone = topo(0, 1, (0,))  # one rank: it coordinates and measures
    assert alone.measuring_node_ranks == (0,) and alone.default_threads() == 8


def test_dry_run_prints_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "never.h5"
    proc = run_cli(["--config", TINY, "--output", out, "--dry-run"])
    assert proc.returncode == 0
    assert proc.stdout.count("task ") == EXPECTED_TASKS
    assert "estimated total" in proc.stdout
    assert not out.exists()


def test_unavailable_device_is_a_row_not_a_crash(tmp_path):
    out = tmp_path / "cuda.h5"
    proc = run_cli(["--config", TINY, "--output", out, "--devices", "cpu,cuda", "--batch-sizes", "1",
                    "--precisions", "fp32"])
    assert proc.returncode == 0, proc.stderr
    t = read_tasks(out)
    by_dev = dict(zip(t["device"], zip(t["status"], t["message"])))
    assert by_dev["cpu"][0] == "ok"
    status, message = by_dev["cuda"]
    assert status == "unavailable" and "no CUDA device is visible" in message and "rank 0 on" in message


BAD_INPUTS = [
    (["--batch-sizes", "0"], "--batch-sizes (sweep.batch_sizes) = '0': allowed: >= 1"),
    (["--warmup-s", "inf"], "--warmup-s (measure.warmup_s) = 'inf': allowed: a finite number"),
    (["--seed", "-1"], "--seed (seed) = '-1': allowed: >= 0"),
    (["--config", "CFG_LATIN1"], "is not UTF-8 text"),
    (["--jsonl", "/proc/mpibench.jsonl"], "--jsonl: cannot write to directory '/proc'"),
    (["--output", "OUT_EXISTING", "--overwrite", "--jsonl", "A_DIR"], "is a directory; give a file path"),
    (["--precisions", "fp8"], "unknown precision 'fp8'; allowed: fp32, bf16, fp16"),
    (["--devices", "gpu"], "unknown device 'gpu'; allowed: cpu, cuda, cuda:N"),
    (["--config", "CFG_UNKNOWN"], "unknown field 'sweep.batchsize'"),
    (["--config", "CFG_BROKEN"], "is not valid YAML"),
    (["--config", "CFG_MISSING"], "does not exist"),
    (["--output", "OUT_EXISTING"], "already exists; pass --overwrite"),
    (["--output", "OUT_UNWRITABLE"], "cannot write to directory"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--energy", "rapl"], "--energy rapl: "),
]
if Path("/sys/class/powercap").exists():  # only where RAPL cannot be read is asking for it bad input
    BAD_INPUTS.pop()


def _materialise(args, tmp_path):
    (tmp_path / "unknown.yaml").write_text("sweep:\n  batchsize: [1]\n")
    (tmp_path / "broken.yaml").write_text("sweep: [1,\n")
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "latin1.yaml").write_bytes("# r\xe9sum\xe9\n".encode("latin-1"))
    subs = {"CFG_UNKNOWN": tmp_path / "unknown.yaml", "CFG_BROKEN": tmp_path / "broken.yaml",
            "CFG_MISSING": tmp_path / "missing.yaml",
            "CFG_LATIN1": tmp_path / "latin1.yaml", "A_DIR": tmp_path, "OUT_EXISTING": tmp_path / "existing.h5",
            "OUT_UNWRITABLE": tmp_path / "a_file" / "out.h5"}
    return [str(subs.get(a, a)) for a in args]


#: Values the config checks alike whatever the launcher: one rank is enough to show each.
CHECKED_ALIKE = ("--warmup-s", "--seed")
BAD_INPUT_CASES = [
    pytest.param(args, message, n, id=f"{message.split(':')[0][:20]}-{'mpirun4' if n else '1rank'}",
                 marks=[pytest.mark.mpi] if n else [])
    for args, message in BAD_INPUTS for n in (None, 4) if not (n and args[0] in CHECKED_ALIKE)
]


@pytest.mark.parametrize("args, message, n", BAD_INPUT_CASES)
def test_bad_input_exit_2_and_nothing_lost(tmp_path, n, args, message):
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"results from last week")
    before = sha256(existing)
    args = _materialise(args, tmp_path)
    base = ["--config", str(TINY)] if "--config" not in args else []
    if "--output" not in args:
        args += ["--output", str(tmp_path / "o.h5")]
    proc = run_cli(base + args, n=n, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr  # one line, from rank 0 only
    assert "Traceback" not in proc.stderr
    assert sha256(existing) == before
    assert not (tmp_path / "o.h5").exists()
