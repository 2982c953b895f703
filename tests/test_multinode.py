"""Two emulated nodes (network namespaces with their own hostnames), two ranks each, real mpirun."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, mpi_env
from netns import EmulatedNodes, why_not
from mpibench.store import read_hosts, read_scaling, read_tasks

pytestmark = [pytest.mark.mpi, pytest.mark.multinode]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    try:
        n = EmulatedNodes(tmp_path_factory.mktemp("netns"))
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create network namespaces here: {err.stderr.strip()}")
    yield n
    n.close()


def run_on(nodes, args, timeout=240):
    env = mpi_env()
    env.pop("PRTE_MCA_rmaps_default_mapping_policy", None)  # it would put every rank on the first host
    cmd = [*nodes.mpirun(), sys.executable, "-m", "mpibench.run", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_sweep_over_two_nodes(nodes, tmp_path):
    out = tmp_path / "two.h5"
    proc = run_on(nodes, ["--config", TINY, "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = read_hosts(out)
    assert sorted(hosts["host"]) == ["node1", "node2"]
    assert sorted(hosts["ranks"]) == ["0,1", "2,3"]
    t = read_tasks(out)
    assert set(t["status"]) == {"ok"}
    assert set(t["host"]) == {"node1", "node2"}, "tasks should run on both nodes"
    # the two measuring ranks of node2 split its cores; node1's only measuring rank has them all
    cores = {(h, int(r)): c for h, r, c in zip(t["host"], t["rank"], t["cores"])}
    node2 = [set(c.split(",")) for (h, _), c in sorted(cores.items()) if h == "node2"]
    if len(node2) == 2 and (os.cpu_count() or 1) >= 2:
        assert not node2[0] & node2[1], cores


def test_scaling_over_ranks_and_nodes(nodes, tmp_path):
    out = tmp_path / "scale.h5"
    proc = run_on(nodes, ["--model", "synthetic", "--batch-sizes", "4", "--seq-lens", "64", "--warmup-s", "0",
                          "--min-time", "0.3", "--mode", "scaling", "--output", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = read_scaling(out)
    by_ranks = {int(n): e for b, n, e in zip(s["by"], s["n_ranks"], s["efficiency"]) if b == "ranks"}
    assert sorted(by_ranks) == [1, 2, 3]
    by_nodes = sorted(int(n) for b, n in zip(s["by"], s["n_nodes"]) if b == "nodes")
    assert by_nodes == [1, 2]
    assert all(0 < e <= 1.5 for e in s["efficiency"])
