"""Config -> ordered list of Tasks: the cartesian sweep, a cost estimate, the resume filter."""

from __future__ import annotations

import functools
import itertools
import math
import random

from mpibench.architecture import config_dict, forward_flops_per_sample, generate_flops_per_sample, shape_of
from mpibench.config import LOAD_ALLOWANCE_S, Config, best_half_precision
from mpibench.task import Task

#: A rough CPU rate for ordering and the --dry-run estimate only; never reported as a result.
_ASSUMED_FLOPS = {"cpu": 50e9, "cuda": 20e12}
_MODEL_BUILD_S = 2.0
#: The least a measured iteration takes (the harness's own cost): it bounds the samples a task records.
_MIN_ITER_S = 50e-6
#: What a decode step costs beyond its FLOPs (a forward call's own overhead), for estimates only.
_DECODE_STEP_S = 1e-3


def precisions_for(cfg: Config, device: str, bf16_supported: bool | None = None) -> list[str]:
    out = list(cfg.sweep.precisions)
    if cfg.sweep.mixed_precision:
        half = best_half_precision(device.split(":")[0], bf16_supported)
        if half not in out:
            out.append(half)
    return out


def expand(cfg: Config, bf16_supported: bool | None = None) -> list[Task]:
    """The sweep in a stable order (task ids are positions in it)."""
    s = cfg.sweep
    combos = []
    for device, scenario, backend, attn, work in itertools.product(s.devices, s.scenarios, s.backends, s.attention,
                                                                   s.workloads):
        batch_sizes = [1] if scenario == "single-stream" else s.batch_sizes  # one sample at a time
        rates = (cfg.server.rates_sps or [0.0]) if scenario == "server" else [0.0]
        for prec, bs, seq, thr, rate in itertools.product(
            precisions_for(cfg, device, bf16_supported), batch_sizes, s.seq_lens, s.threads, rates
        ):
            combos.append(dict(device=device, precision=prec, batch_size=bs, seq_len=seq, threads=thr,
                               scenario=scenario, backend=backend, attention=attn, rate_sps=rate, workload=work))
    costs = [estimate_cost(cfg, c["device"], c["batch_size"], c["seq_len"], c["scenario"], c["workload"])
             for c in combos]
    return [  # with --repeats, window r of every configuration after window r - 1 of all of them
        Task(r * len(combos) + i, cfg.model.name, est_cost_s=cost, repeat=r, **c)
        for r in range(cfg.measure.repeats) for i, (c, cost) in enumerate(zip(combos, costs))
    ]


def iteration_s(cfg: Config, device: str, batch_size: int, seq_len: int, workload: str = "classify") -> float:
    """Expected seconds of one iteration (a rough rate: for ordering and estimates only)."""
    if cfg.model.name == "synthetic":  # sleeps batch_size x seq_len us (+5 % "tokenising")
        return batch_size * seq_len * 1.05e-6
    shape = _shape(cfg.model.name)
    if workload == "generate":
        return generate_flops_per_sample(seq_len, cfg.sweep.max_new_tokens, shape) * batch_size / _ASSUMED_FLOPS[
            device.split(":")[0]] + cfg.sweep.max_new_tokens * _DECODE_STEP_S
    flops = forward_flops_per_sample(seq_len, shape) * batch_size
    return flops / _ASSUMED_FLOPS[device.split(":")[0]]


@functools.lru_cache(maxsize=8)
def _shape(model: str):
    """The model's shape, read once per model (a directory's config.json); a config that cannot be read is
    distilbert-base's for the estimate, and fails where the task builds the model."""
    try:
        return shape_of(config_dict(model))
    except (OSError, ValueError, TypeError):
        return shape_of(config_dict("distilbert-base-uncased"))


def _measure_s(cfg: Config, iter_s: float, batch_size: int, scenario: str) -> float:
    m = cfg.measure
    if scenario == "server":  # a few rates, each long enough for a p99, then the steady run
        return cfg.server.search_steps * max(m.min_time_s, cfg.server.min_requests * iter_s / batch_size) + cfg.server.min_s
    return min(m.max_time_s, max(m.min_time_s, m.min_iters * iter_s))


def estimate_cost(cfg: Config, device: str, batch_size: int, seq_len: int,
                  scenario: str = "offline", workload: str = "classify") -> float:
    """Expected seconds for one task: warm-up, then the longer of min_time and min_iters iterations."""
    iter_s = iteration_s(cfg, device, batch_size, seq_len, workload)
    warm = max(cfg.measure.warmup_s, (cfg.measure.warmup_iters + 1) * iter_s)
    return warm + _measure_s(cfg, iter_s, batch_size, scenario)


def estimate_samples(cfg: Config, task: Task) -> int:
    """Raw samples (iterations) a task is expected to record: for the disk space a run needs."""
    iter_s = max(_MIN_ITER_S, iteration_s(cfg, task.device, task.batch_size, task.seq_len, task.workload))
    return math.ceil(_measure_s(cfg, iter_s, task.batch_size, task.scenario) / iter_s)


def task_timeout_s(cfg: Config, task: Task) -> float:
    """How long a task may take before its worker counts as lost: --task-timeout, or what the measuring
    rules allow it (warm-up and measuring each end at max_time_s; a server run lasts max_time_s per rate,
    then serves what has queued) plus LOAD_ALLOWANCE_S to load and compile its model."""
    if cfg.cluster.task_timeout_s is not None:
        return cfg.cluster.task_timeout_s
    max_s = cfg.measure.max_time_s * task.time_scale
    if task.scenario == "server":  # warm-up, each rate tried, and up to 3 steady runs confirming the search
        steady = 0.0 if task.rate_sps else 3 * cfg.server.min_s
        measuring = 2 * (max_s * (1 + (1 if task.rate_sps else cfg.server.search_steps)) + steady)
    else:
        measuring = 2 * max_s
    return LOAD_ALLOWANCE_S + measuring


def first_windows(tasks: list[Task]) -> list[Task]:
    """One task per configuration: --optimal and --mode scaling measure each in windows of their own."""
    return [t for t in tasks if not t.repeat]


def pending(tasks: list[Task], done_ids: set[int]) -> list[Task]:
    """Tasks not yet finished (for --resume: ids are places in the plan of the file's config)."""
    return [t for t in tasks if t.task_id not in done_ids]


def dispatch_order(tasks: list[Task]) -> list[Task]:
    """Longest expected first: the classic LPT rule keeps the makespan short.

    With --repeats, window by window (every configuration's first window, then every second one, ...),
    each in a random order of its own (seeded by the task id, so a plan always dispatches alike): a
    configuration's windows lie far apart in time and in no fixed order, so drift during the run spreads
    over all configurations instead of favouring those measured early.
    """
    if any(t.repeat for t in tasks):
        return sorted(tasks, key=lambda t: (t.repeat, random.Random(t.task_id).random()))
    return sorted(tasks, key=lambda t: (-t.est_cost_s, t.task_id))


def estimate_total(tasks: list[Task], workers: int) -> float:
    """A lower-bound-ish makespan: LPT over `workers` plus one model build per worker."""
    loads = [0.0] * max(1, workers)
    for t in dispatch_order(tasks):
        i = loads.index(min(loads))
        loads[i] += t.est_cost_s
    return max(loads) + _MODEL_BUILD_S
