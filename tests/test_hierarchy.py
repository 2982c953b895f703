"""benchmarks/hierarchy.py: the flat simulation against the closed form, the hierarchy against flat, the
decomposition against the full event simulation, and the --quick run's last line."""

import importlib.util
import re
import subprocess
import sys

import pytest

from conftest import ROOT, mpi_env

_spec = importlib.util.spec_from_file_location("benchmarks_hierarchy", ROOT / "benchmarks" / "hierarchy.py")
H = sys.modules.setdefault("benchmarks_hierarchy", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(H)  # registered first: its dataclasses look their module up

DEFAULT = H.Costs()
SLOW_STORE = H.Costs(dispatch_s=50e-6, store_s=0.5e-3, block_s=50e-6)
FREE = H.Costs(0.0, 0.0, 0.0)


@pytest.mark.parametrize("T, costs", [(0.05, DEFAULT), (0.2, DEFAULT), (0.1, SLOW_STORE), (0.3, SLOW_STORE)])
def test_flat_agrees_with_closed_form(T, costs):
    # T / c of 150-600 ranks: small enough to be quick, T >> c as for real tasks (c / T is a worker's own wait)
    closed = T / costs.per_result  # ranks one coordinator keeps busy
    # above capacity: N x utilisation (ranks kept busy) ~ T / c, utilisation ~ T / (N c)
    above = H.flat(int(round(2 * closed)), T, 20, costs)
    assert above.ranks * above.utilisation == pytest.approx(closed, rel=0.15)
    assert above.busy > 0.95  # the coordinator is the bottleneck
    # below capacity: coordination costs little next to the run with free coordination
    below = H.flat(int(round(closed / 4)), T, 20, costs)
    assert below.utilisation >= 0.95 * H.flat(below.ranks, T, 20, FREE).utilisation
    # the size at which coordination costs 5 % sits at T / c
    sim = H.with_ceiling(lambda n: H.flat(n, T, 20, costs), lambda n: H.flat(n, T, 20, FREE))
    found = H.knee(sim, below.ranks, above.ranks, H.coordination_ok)
    assert found == pytest.approx(closed, rel=0.15)


def test_vectorised_flat_equals_event_simulation():
    for n, T, K, costs in [(1, 1.0, 5, DEFAULT), (7, 0.01, 6, DEFAULT), (60, 0.02, 8, DEFAULT),
                           (300, 0.05, 5, SLOW_STORE)]:
        fast = H.flat(n, T, K, costs, seed=3)
        ref = H.events(1, n, T, K, costs, mode="flat", seed=3)
        assert fast.utilisation == pytest.approx(ref["utilisation"], rel=1e-9)
        assert fast.makespan == pytest.approx(ref["makespan"], rel=1e-9)
        assert fast.busy == pytest.approx(ref["busy"], rel=1e-9)


def test_hierarchy_beats_flat_above_flat_capacity():
    n = 4096  # T / c = 2985 for 1-s tasks
    flat = H.flat(n, 1.0, 20, DEFAULT)
    tree = H.hierarchy(n // 128, 128, 1.0, 20, DEFAULT, samples=8)
    assert not tree.starved
    assert flat.utilisation < 0.8 < 0.95 < tree.utilisation
    assert tree.busy < 0.1 and tree.root_busy < 0.1


# (groups, leader size, T, tasks per worker, costs, block): root idle; root contended (slow block_s, courses
# simulated once and shifted); first blocks that come while leaders still take first requests, half-size
# blocks; larger blocks, the last one partial
EXACT = [(4, 16, 1.0, 10, DEFAULT, None),
         (20, 8, 0.3, 8, H.Costs(85e-6, 0.25e-3, 1e-3), None),
         (6, 8, 0.2, 10, H.Costs(85e-6, 0.25e-3, 2e-3), None),
         (3, 32, 1.0, 6, DEFAULT, 16),
         (5, 12, 0.2, 7, H.Costs(85e-6, 0.25e-3, 0.5e-3), 18)]


@pytest.mark.parametrize("G, k, T, K, costs, block", EXACT)
def test_decomposition_equals_full_event_simulation(G, k, T, K, costs, block):
    full = H.events(G, k, T, K, costs, mode="full", block=block)
    split = H.hierarchy(G, k, T, K, costs, block=block, samples=G)
    assert not full["starved"] and not split.starved
    assert split.utilisation == pytest.approx(full["utilisation"], rel=1e-9)
    assert split.makespan == pytest.approx(full["makespan"], rel=1e-9)
    assert split.busy == pytest.approx(full["busy"], rel=1e-9)
    assert split.root_busy == pytest.approx(full["root_busy"], rel=1e-9)


def test_decomposition_flags_a_root_that_cannot_keep_up():
    slow_root = H.Costs(85e-6, 0.25e-3, 1e-3)
    full = H.events(8, 8, 0.05, 10, slow_root, mode="full", block=4)
    split = H.hierarchy(8, 8, 0.05, 10, slow_root, block=4, samples=8)
    assert full["starved"] and split.starved and not split.ok


def test_sampled_groups_estimate_the_whole():
    exact = H.hierarchy(64, 32, 1.0, 10, DEFAULT, samples=64)
    for samples in (8, 16):
        assert H.hierarchy(64, 32, 1.0, 10, DEFAULT, samples=samples).utilisation == pytest.approx(
            exact.utilisation, abs=0.01)


def test_grid_and_search():
    assert H.grid(16, 200) == [16, 24, 32, 48, 64, 96, 128, 192]
    outcome = lambda n, u: H.Outcome(n, u, 0.0, 1.0)  # noqa: E731
    best, failed = H.largest(lambda n: outcome(n, 1.0 if n <= 100 else 0.5), H.grid(16, 1024))
    assert (best.ranks, failed.ranks) == (96, 128)
    assert H.largest(lambda n: outcome(n, 1.0), H.grid(16, 64))[1] is None
    assert H.knee(lambda n: outcome(n, 1.0 if n <= 100 else 0.5), 96, 128, rel=0.0) == 100


def test_quick_run_prints_its_last_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hierarchy.py"), "--quick"],
                          capture_output=True, text=True, timeout=120, env=mpi_env())
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"coordinator_max_ranks_at_1s: ([0-9]+)", last)
    assert m and int(m.group(1)) > 0, last
