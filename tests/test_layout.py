"""The cluster layout decides, once, which ranks measure and whose energy readings are their own."""

from mpibench.cluster.layout import Layout


def facts(nodes, gpus=0, over=False):
    return [(node, f"node{node}", over, gpus) for node in nodes]


def test_rank_0_coordinates_and_a_lone_measuring_rank_owns_its_node():
    # ranks 0,1 on node 0 (rank 0 only coordinates), ranks 2,3 on node 1
    lay = Layout.of(facts([0, 0, 1, 1]), "device")
    assert lay.workers == [(0, 1), (1, 2), (1, 3)]
    assert lay.cpu_exclusive == (True, True, False, False)  # node 1: two measuring ranks share the CPUs
    assert lay.rank_hosts == {0: "node0", 1: "node0", 2: "node1", 3: "node1"}
    assert not lay.oversubscribed


def test_isolation_node_makes_every_reading_exclusive():
    lay = Layout.of(facts([0, 0, 0, 0]), "node")
    assert all(lay.cpu_exclusive) and all(lay.gpu_exclusive)


def test_gpu_is_exclusive_while_ranks_per_node_do_not_exceed_gpus():
    assert Layout.of(facts([0, 0, 0], gpus=2), "device").gpu_exclusive == (True, True, True)
    assert Layout.of(facts([0, 0, 0, 0], gpus=2), "device").gpu_exclusive == (False,) * 4
    assert Layout.of(facts([0], gpus=0), "device").workers == [(0, 0)]  # one rank measures itself


def test_oversubscription_on_any_rank_is_reported():
    assert Layout.of([(0, "node0", False, 0), (0, "node0", True, 0)], "device").oversubscribed
