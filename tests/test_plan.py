"""Plan expansion, ordering and estimates (no torch, no MPI)."""

from mpibench.config import Config
from mpibench.architecture import forward_flops_per_sample, shape_of
from mpibench.plan import dispatch_order, estimate_total, expand, pending


def cfg(**sweep):
    return Config.model_validate({"sweep": {"batch_sizes": [1, 2, 4], "precisions": ["fp32"], **sweep}})


def test_cartesian_sweep_with_stable_ids():
    tasks = expand(cfg(devices=["cpu", "cuda"], seq_lens=[64, 128], precisions=["fp32", "bf16"]))
    assert len(tasks) == 2 * 2 * 3 * 2
    assert [t.task_id for t in tasks] == list(range(len(tasks)))
    assert len({t.key for t in tasks}) == len(tasks)
    assert tasks[0].key[:6] == ("distilbert-base-uncased", "cpu", "fp32", 1, 64, 0)


def test_scenarios_expand_their_own_way():
    c = Config.model_validate({"sweep": {"batch_sizes": [1, 4], "precisions": ["fp32"],
                                         "scenarios": ["offline", "single-stream", "server"]},
                               "server": {"rates_sps": [10, 20]}})
    tasks = expand(c)
    by = {s: [t for t in tasks if t.scenario == s] for s in ("offline", "single-stream", "server")}
    assert [t.batch_size for t in by["offline"]] == [1, 4]
    assert [t.batch_size for t in by["single-stream"]] == [1]  # one sample at a time
    assert [(t.batch_size, t.rate_sps) for t in by["server"]] == [(1, 10), (1, 20), (4, 10), (4, 20)]
    search = expand(Config.model_validate({"sweep": {"batch_sizes": [4], "scenarios": ["server"]}}))
    assert [t.rate_sps for t in search] == [0.0]  # no rates: one search task


def test_mixed_precision_adds_the_best_half_precision():
    ps = {t.precision for t in expand(cfg(mixed_precision=True))}
    assert ps == {"fp32", "bf16"}
    old_gpu = {t.precision for t in expand(cfg(devices=["cuda"], mixed_precision=True), bf16_supported=False)}
    assert old_gpu == {"fp32", "fp16"}
    already = expand(cfg(mixed_precision=True, precisions=["bf16"]))
    assert [t.precision for t in already] == ["bf16"] * 3


def test_longest_first_and_estimates():
    tasks = expand(cfg(batch_sizes=[1, 64, 8], seq_lens=[512]))
    order = dispatch_order(tasks)
    assert [t.batch_size for t in order] == [64, 8, 1]
    assert order[0].est_cost_s > order[-1].est_cost_s > 0
    assert estimate_total(tasks, 1) > estimate_total(tasks, 3)


def test_resume_filter():
    tasks = expand(cfg())
    left = pending(tasks, {0, 2})
    assert [t.task_id for t in left] == [1]


def test_flops_hand_count_for_a_tiny_shape():
    # s=2, d=4, h=8, 1 layer, 2 labels: per layer 4*2*16 + 2*4*4 + 2*2*4*8 = 128 + 32 + 128 = 288
    # head 16 + 8 = 24; FLOPs = 2 * (288 + 24) = 624
    shape = shape_of(dict(model_type="distilbert", n_layers=1, dim=4, hidden_dim=8, n_heads=2))
    assert forward_flops_per_sample(2, shape, num_labels=2) == 624
