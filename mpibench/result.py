"""What a worker sends back for one Task: status, metrics and the raw per-iteration times.

The columns a Result fills are declared here, once; with the Task's own columns (mpibench.task) they
make the /tasks table. The /scaling table's columns are declared here too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mpibench.stats import PHASES
from mpibench.task import TASK_FIELD_COLUMNS, Column, Task

STATUSES = ("ok", "failed", "oom", "unavailable", "interrupted")

#: Where and how the task ran, and what was measured: every /tasks column a Result fills.
RESULT_COLUMNS: tuple[Column, ...] = (
    Column("rank", "i8", "MPI rank that measured the task"),
    Column("host", "str", "hostname of that rank", 128),
    Column("status", "str", "ok, failed, oom, unavailable or interrupted"),
    Column("message", "str", "why, when status is not ok (with rank and host)", 512),
    Column("weights", "str", "pretrained (local files) or random-init (same architecture and speed)"),
    Column("architecture", "str", "the transformers class built (DistilBertForSequenceClassification, ...)", 128),
    Column("n_params", "i8", "parameters of the model built"),
    Column("tokenizer", "str", "the model's own tokenizer class (local files), wordpiece (the bundled BERT-uncased "
                               "one, the family's own) or stand-in (its ids mapped into the model's vocabulary)"),
    Column("precision_mode", "str", "how the precision is applied: cast (weights and activations in it)"),
    Column("preprocess_mode", "str", "inline (tokenised in the timed loop) or ahead (tokenised before timing)"),
    Column("compile_s", "f8", "backend compile: seconds of the first call (compilation), apart from warm-up"),
    Column("device_name", "str", "the device as the rank saw it (CPU model or GPU name)", 128),
    Column("bound_device", "str", "the torch device the task ran on (cuda resolved to the rank's own GPU)"),
    Column("cores", "str", "CPU cores the rank was pinned to, e.g. 0-3", 256),
    Column("peak_memory_mib", "f8", "peak memory of the task, MiB: on CUDA max_memory_allocated (weights and "
                                    "activations); on CPU the process's peak resident set during the task less "
                                    "its resident set before any model (NaN: not measurable)"),
    Column("n_iters", "i8", "measured iterations (raw samples per phase)"),
    Column("converged", "?", "the stopping rule was met before max_time"),
    Column("cold_ms", "f8", "end-to-end time of the very first call"),
    Column("warmup_iters", "i8", "warm-up iterations run after the cold call"),
    Column("measure_s", "f8", "wall time of the measured iterations (the energy window)"),
    Column("window_coverage", "f8", "the timed phases' share of measure_s: below 1 by the loop's own time "
                                    "(a server's: its busy share, waits between arrivals excluded)"),
    Column("throughput_sps", "f8", "samples per second, end to end: batch_size / e2e_p50 (server: requests "
                                   "completed per second, server_achieved_sps)"),
    Column("throughput_ci_low_sps", "f8", "95 % CI of throughput_sps: batch_size / e2e_ci_high (server: NaN)"),
    Column("throughput_ci_high_sps", "f8", "95 % CI of throughput_sps: batch_size / e2e_ci_low (server: NaN)"),
    Column("throughput_mean_sps", "f8", "the mean-based rate: batch_size / e2e_mean (server: as throughput_sps)"),
    Column("forward_throughput_sps", "f8", "samples per second of the forward phase alone: batch_size / "
                                           "forward_p50 (server: samples of the batches run / their forward time)"),
    Column("latency_p99_ms", "f8", "the p99 latency a configuration is judged by: e2e_p99 of its batches "
                                   "(server: server_p99 of its requests)"),
    *[Column(f"e2e_{s}_ms", "f8", f"end-to-end latency per batch: {s}")
      for s in ("mean", "std", "p50", "p90", "p99", "min", "max")],
    Column("e2e_ci_low_ms", "f8", "95 % CI of the median end-to-end latency: low"),
    Column("e2e_ci_high_ms", "f8", "95 % CI of the median end-to-end latency: high"),
    *[Column(f"{p}_{s}_ms", "f8", f"{p} phase: {s}") for p in PHASES for s in ("mean", "p50", "p99")],
    Column("percentile_note", "str", "which latency percentiles were withheld for too few samples (MLPerf rule)",
           256),
    Column("server_rate_sps", "f8", "server: the arrival rate reported (planned, or the highest under the SLO)"),
    Column("server_achieved_sps", "f8", "server: requests completed per second at that rate"),
    Column("server_requests", "i8", "server: requests served at that rate"),
    Column("server_mean_ms", "f8", "server: mean request latency, arrival to completion (queueing included)"),
    Column("server_p50_ms", "f8", "server: median request latency"),
    Column("server_p90_ms", "f8", "server: p90 request latency (NaN under 64 requests)"),
    Column("server_p99_ms", "f8", "server: p99 request latency (NaN under 662 requests)"),
    Column("server_slo_ms", "f8", "server: the request-latency bound the rate was searched under and goodput "
                                  "counted by (NaN where generation is held to token SLOs instead)"),
    Column("server_ttft_slo_ms", "f8", "server, generate: the time-to-first-token bound (NaN: none)"),
    Column("server_tpot_slo_ms", "f8", "server, generate: the time-per-output-token bound (NaN: none)"),
    Column("server_goodput_sps", "f8", "server: requests per second that met every bound of the SLO"),
    Column("server_good_fraction", "f8", "server: the fraction of requests that met every bound of the SLO"),
    Column("server_search", "str", "server search: JSON [[rate, percentile, its latency_ms, met the SLO], ...] of "
                                   "every rate tried", 1024),
    Column("server_mean_batch", "f8", "server: mean batch size the queue formed"),
    Column("server_judged_by", "str", "server: the percentile the rate was held to the SLO by: p99, or p90 or p50 "
                                      "where too few requests arrived to state it"),
    Column("server_capacity_sps", "f8", "server: the offline capacity measured at warm-up (batch_size / median "
                                        "batch time); the search never offers more"),
    Column("server_steady_s", "f8", "server search: seconds of the steady run that confirmed the rate (NaN: none)"),
    Column("new_tokens", "i8", "generate: tokens produced per sequence (--max-new-tokens)"),
    Column("ttft_p50_ms", "f8", "generate: time to first token, median: preprocess + h2d + prefill; server: per "
                                "request, from its arrival (queueing included)"),
    Column("ttft_p99_ms", "f8", "generate: time to first token, p99 (NaN under 662 iterations); server: per "
                                "request, from its arrival"),
    Column("ttft_ci_low_ms", "f8", "generate: 95 % CI of ttft_p50_ms, lower bound (order statistics)"),
    Column("ttft_ci_high_ms", "f8", "generate: 95 % CI of ttft_p50_ms, upper bound"),
    Column("tpot_mean_ms", "f8", "generate: time per output token after the first: the mean decode step"),
    Column("tpot_ci_low_ms", "f8", "generate: 95 % CI of tpot_mean_ms from the iterations' means (Student's t), "
                                   "lower bound"),
    Column("tpot_ci_high_ms", "f8", "generate: 95 % CI of tpot_mean_ms, upper bound"),
    Column("itl_p50_ms", "f8", "generate: inter-token latency (one decode step), median"),
    Column("itl_p99_ms", "f8", "generate: inter-token latency, p99 (NaN under 662 decode steps)"),
    Column("output_tokens_per_s", "f8", "generate: batch_size x new_tokens / e2e_p50; server: the achieved "
                                        "request rate x new_tokens"),
    Column("output_tokens_ci_low_per_s", "f8", "generate: 95 % CI of output_tokens_per_s, from e2e_ci_high_ms"),
    Column("output_tokens_ci_high_per_s", "f8", "generate: 95 % CI of output_tokens_per_s, from e2e_ci_low_ms"),
    Column("prefill_tokens_per_s", "f8", "generate: batch_size x seq_len / the median prefill"),
    Column("decode_bytes_per_token", "f8", "generate: memory read per generated token after the first: a decode "
                                           "step's weights (read once for the batch) and KV cache so far (mean "
                                           "over the steps) over batch_size, bytes"),
    Column("decode_gbs", "f8", "generate: the bandwidth decode reached: decode_bytes_per_token x batch_size / "
                               "tpot_mean, GB/s"),
    Column("bandwidth_peak_gbs", "f8", "the device's datasheet memory bandwidth, GB/s (NaN: none stated)"),
    Column("bandwidth_source", "str", "where bandwidth_peak_gbs comes from, or why it is unknown", 128),
    Column("mbu", "f8", "generate: model bandwidth utilisation, decode_gbs / bandwidth_peak_gbs"),
    Column("flops_per_sample", "f8", "model FLOPs of one forward pass over one sample"),
    Column("achieved_tflops", "f8", "flops_per_sample * forward_throughput_sps / 1e12"),
    Column("peak_tflops", "f8", "the device's peak for the precision: a datasheet figure (GPUs) or an estimate "
                                "(CPUs)"),
    Column("mfu", "f8", "model FLOPs utilisation: achieved_tflops / peak_tflops (NaN: peak unknown)"),
    Column("mfu_measured", "f8", "achieved_tflops / the GEMM peak its node measured at start for the device "
                                 "and precision (/hosts gemm_tflops; CPU: scaled to the task's threads; NaN: "
                                 "not measured)"),
    Column("peak_source", "str", "where peak_tflops comes from, or why it is unknown", 128),
    Column("energy_j", "f8", "energy of the measured window, J (NaN where not measured)"),
    Column("energy_cpu_j", "f8", "CPU package energy, J"),
    Column("energy_dram_j", "f8", "DRAM energy, J"),
    Column("energy_gpu_j", "f8", "GPU energy, J"),
    Column("j_per_sample", "f8", "energy_j / samples served in measure_s (the window's own rate, not "
                                 "throughput_sps: their product is energy_j / measure_s only at full coverage)"),
    Column("j_per_token", "f8", "generate: j_per_sample / new_tokens"),
    Column("energy_status", "str", "ok, shared, or why energy is NaN (unavailable, absent, permission, stuck, "
                                  "...)"),
    Column("energy_reason", "str", "the sentence behind an energy_status other than ok (empty when ok)", 512),
    Column("energy_method", "str", "counter, sampled, estimated or none"),
    Column("start_time", "f8", "task start, Unix seconds"),
    Column("end_time", "f8", "task end, Unix seconds"),
    Column("scaling_ranks", "i8", "--mode scaling: ranks measuring this task at once (-1 in a sweep)"),
    Column("raw_offset", "i8", "first row of this task in /raw/*_ns"),
    Column("raw_count", "i8", "rows of this task in /raw/*_ns (= n_iters)"),
)

#: The /tasks table: the task's own columns, then what its Result adds.
TASK_COLUMNS: tuple[Column, ...] = TASK_FIELD_COLUMNS + RESULT_COLUMNS

#: The /scaling table (--mode scaling): one row per task and rank (or node) count.
SCALING_COLUMNS: tuple[Column, ...] = (
    Column("task_id", "i8", "the task (configuration) being scaled"),
    *(c for c in TASK_FIELD_COLUMNS if c.name not in ("task_id", "stage")),
    Column("by", "str", "ranks (1, 2, 4, ... ranks, filling nodes in order) or nodes (all ranks of 1, 2, ... "
                        "nodes)"),
    Column("n_ranks", "i8", "ranks measuring the task at once"),
    Column("n_nodes", "i8", "nodes those ranks are on"),
    Column("ranks", "str", "the ranks, as ranges (1-15,17)", 4096),
    Column("window_s", "f8", "the common measurement window, s"),
    Column("aggregate_throughput_sps", "f8", "sum of the ranks' throughputs, samples/s"),
    Column("per_rank_throughput_sps", "f8", "aggregate / n_ranks"),
    Column("min_rank_throughput_sps", "f8", "slowest rank"),
    Column("max_rank_throughput_sps", "f8", "fastest rank"),
    Column("efficiency", "f8", "aggregate / (n_ranks x the one-rank throughput)"),
    Column("status", "str", "ok, or failed when a rank did not measure"),
)


@dataclass
class Result:
    task: Task
    status: str
    rank: int
    host: str
    message: str = ""
    metrics: dict = field(default_factory=dict)
    raw_ns: dict[str, np.ndarray] | None = None
    energy_trace: list[tuple[float, str, float]] | None = None  # (Unix time s, domain, counter J)
    start_time: float = field(default_factory=time.time)
    end_time: float = field(default_factory=time.time)

    def row(self) -> dict:
        """The /tasks row: task parameters, where it ran, how it went, what was measured."""
        return {
            **self.task.columns(),
            "rank": self.rank, "host": self.host, "status": self.status, "message": self.message,
            "start_time": self.start_time, "end_time": self.end_time,
            **self.metrics,
        }

    @classmethod
    def failure(cls, task: Task, status: str, rank: int, host: str, message: str) -> "Result":
        return cls(task, status, rank, host, message=f"rank {rank} on {host}: {message}")
