"""The HDF5 file: one per run, rank 0 the only writer, flushed after every result.

Layout (all datasets chunked and appendable, created up front so the writer can run in SWMR mode,
which keeps every flushed result readable after a crash or SIGKILL):

    /            attributes: schema_version, mpibench_version, config_yaml, start/end time, ...
    /hosts/<col> one row per node
    /tasks/<col> one row per finished task; equal-length 1-D columns, strings UTF-8
    /raw/<phase>_ns  per-iteration nanoseconds of every task, rows [raw_offset, raw_offset+raw_count)
    /scaling/<col>   --mode scaling: one row per task and rank (or node) count
    /energy/<col>    raw energy counter samples (time, domain, value) read during the tasks

No torch and no MPI here: analysis reads these files on a laptop.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from mpibench import SCHEMA_VERSION, __version__
from mpibench.errors import UsageError
from mpibench.stats import PHASES

STR = h5py.string_dtype("utf-8")

#: (name, dtype, description) of every /tasks column, in file order. README documents these.
TASK_COLUMNS: list[tuple[str, Any, str]] = [
    ("task_id", "i8", "position of the task in the planned sweep"),
    ("model", STR, "model name or path"),
    ("device", STR, "cpu, cuda or cuda:N as planned"),
    ("precision", STR, "fp32, bf16 or fp16 (weights cast to that type)"),
    ("batch_size", "i8", "samples per forward pass"),
    ("seq_len", "i8", "tokens per sample (inputs padded/truncated to exactly this)"),
    ("threads", "i8", "intra-op threads the task ran with (torch.set_num_threads)"),
    ("scenario", STR, "offline, single-stream or server"),
    ("backend", STR, "eager or compile (torch.compile)"),
    ("attention", STR, "attention implementation: sdpa or eager"),
    ("rate_sps", "f8", "server scenario: the planned arrival rate, samples/s (0: searched)"),
    ("stage", STR, "--optimal: search-N (short measurements of the grid) or final; empty in a sweep"),
    ("rank", "i8", "MPI rank that measured the task"),
    ("host", STR, "hostname of that rank"),
    ("status", STR, "ok, failed, oom, unavailable or interrupted"),
    ("message", STR, "why, when status is not ok (with rank and host)"),
    ("weights", STR, "pretrained (local files) or random-init (same architecture and speed)"),
    ("precision_mode", STR, "how the precision is applied: cast (weights and activations in it)"),
    ("preprocess_mode", STR, "inline (tokenised in the timed loop) or ahead (tokenised before timing)"),
    ("compile_s", "f8", "backend compile: seconds of the first call (compilation), apart from warm-up"),
    ("device_name", STR, "the device as the rank saw it (CPU model or GPU name)"),
    ("bound_device", STR, "the torch device the task ran on (cuda resolved to the rank's own GPU)"),
    ("cores", STR, "CPU cores the rank was pinned to, e.g. 0-3"),
    ("n_iters", "i8", "measured iterations (raw samples per phase)"),
    ("converged", "?", "the stopping rule was met before max_time"),
    ("cold_ms", "f8", "end-to-end time of the very first call"),
    ("warmup_iters", "i8", "warm-up iterations run after the cold call"),
    ("measure_s", "f8", "wall time of the measured iterations"),
    ("throughput_sps", "f8", "samples per second, end to end (batch_size / e2e_mean)"),
    ("forward_throughput_sps", "f8", "samples per second of the forward phase alone"),
    *[(f"e2e_{s}_ms", "f8", f"end-to-end latency per batch: {s}")
      for s in ("mean", "std", "p50", "p90", "p99", "min", "max")],
    ("e2e_ci_low_ms", "f8", "95 % CI of the median end-to-end latency: low"),
    ("e2e_ci_high_ms", "f8", "95 % CI of the median end-to-end latency: high"),
    *[(f"{p}_{s}_ms", "f8", f"{p} phase: {s}") for p in PHASES for s in ("mean", "p50", "p99")],
    ("percentile_note", STR, "which latency percentiles were withheld for too few samples (MLPerf rule)"),
    ("server_rate_sps", "f8", "server: the arrival rate reported (planned, or the highest under the SLO)"),
    ("server_achieved_sps", "f8", "server: requests completed per second at that rate"),
    ("server_requests", "i8", "server: requests served at that rate"),
    ("server_mean_ms", "f8", "server: mean request latency, arrival to completion (queueing included)"),
    ("server_p50_ms", "f8", "server: median request latency"),
    ("server_p90_ms", "f8", "server: p90 request latency (NaN under 64 requests)"),
    ("server_p99_ms", "f8", "server: p99 request latency (NaN under 662 requests)"),
    ("server_slo_ms", "f8", "server search: the p99 bound searched under"),
    ("server_search", STR, "server search: JSON [[rate, p99_ms], ...] of every rate tried"),
    ("server_mean_batch", "f8", "server: mean batch size the queue formed"),
    ("flops_per_sample", "f8", "model FLOPs of one forward pass over one sample"),
    ("achieved_tflops", "f8", "flops_per_sample * forward_throughput_sps / 1e12"),
    ("peak_tflops", "f8", "the device's peak for the precision: a datasheet figure (GPUs) or an estimate (CPUs)"),
    ("mfu", "f8", "model FLOPs utilisation: achieved_tflops / peak_tflops (NaN: peak unknown)"),
    ("peak_source", STR, "where peak_tflops comes from, or why it is unknown"),
    ("energy_j", "f8", "energy of the measured window, J (NaN where not measured)"),
    ("energy_cpu_j", "f8", "CPU package energy, J"),
    ("energy_dram_j", "f8", "DRAM energy, J"),
    ("energy_gpu_j", "f8", "GPU energy, J"),
    ("j_per_sample", "f8", "energy_j per sample measured"),
    ("energy_status", STR, "ok, shared, or why energy is NaN (unavailable, absent, permission, ...)"),
    ("energy_method", STR, "counter, sampled, estimated or none"),
    ("start_time", "f8", "task start, Unix seconds"),
    ("end_time", "f8", "task end, Unix seconds"),
    ("scaling_ranks", "i8", "--mode scaling: ranks measuring this task at once (-1 in a sweep)"),
    ("raw_offset", "i8", "first row of this task in /raw/*_ns"),
    ("raw_count", "i8", "rows of this task in /raw/*_ns (= n_iters)"),
]

HOST_COLUMNS: list[tuple[str, Any, str]] = [
    ("host", STR, "hostname"),
    ("cpu_model", STR, "CPU model name"),
    ("cores", "i8", "logical CPUs on the node"),
    ("memory_gib", "f8", "memory of the node, GiB"),
    ("gpus", STR, "JSON list of GPUs: name, uuid, memory"),
    ("ranks", STR, "MPI ranks on the node, comma-separated"),
    ("idle_power_w", STR, "JSON: idle power per energy domain measured at start, W (null: unreadable)"),
    ("energy_status", STR, "what the node's energy counters allow: ok, or why not (absent, permission, ...)"),
]

SCALING_COLUMNS: list[tuple[str, Any, str]] = [
    ("task_id", "i8", "the task (configuration) being scaled"),
    ("model", STR, "model"), ("device", STR, "device"), ("precision", STR, "precision"),
    ("batch_size", "i8", "batch size"), ("seq_len", "i8", "sequence length"),
    ("threads", "i8", "threads per rank"),
    ("by", STR, "ranks (1, 2, 4, ... ranks, filling nodes in order) or nodes (all ranks of 1, 2, ... nodes)"),
    ("n_ranks", "i8", "ranks measuring the task at once"),
    ("n_nodes", "i8", "nodes those ranks are on"),
    ("ranks", STR, "the ranks, comma-separated"),
    ("window_s", "f8", "the common measurement window, s"),
    ("aggregate_throughput_sps", "f8", "sum of the ranks' throughputs, samples/s"),
    ("per_rank_throughput_sps", "f8", "aggregate / n_ranks"),
    ("min_rank_throughput_sps", "f8", "slowest rank"),
    ("max_rank_throughput_sps", "f8", "fastest rank"),
    ("efficiency", "f8", "aggregate / (n_ranks x the one-rank throughput)"),
    ("status", STR, "ok, or failed when a rank did not measure"),
]

TRACE_COLUMNS: list[tuple[str, Any, str]] = [
    ("host", STR, "node of the rank that read the counter"),
    ("rank", "i8", "MPI rank that read it"),
    ("task_id", "i8", "task whose window the sample fell in"),
    ("time_s", "f8", "Unix time of the sample, s"),
    ("domain", STR, "cpu-package-N, dram-N or gpu-<uuid>"),
    ("value_j", "f8", "raw counter value, J (wraps are the reader's to undo)"),
]

_CHUNK = 256
_RAW_CHUNK = 16384


def _missing(dtype) -> Any:
    if dtype is STR:
        return ""
    return {"f8": math.nan, "i8": -1, "?": False}[dtype]


def _create_columns(group: h5py.Group, columns, chunk: int) -> None:
    for name, dtype, desc in columns:
        ds = group.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=dtype)
        ds.attrs["description"] = desc


def _append_rows(group: h5py.Group, columns, data: dict[str, Sequence]) -> int:
    """Append rows column-wise: one resize and one slice write per dataset, not one per value.

    `data` maps column names to equal-length sequences; a column left out, or a None value, gets the
    column's missing value. Returns the index of the first new row.
    """
    unknown = set(data) - {c[0] for c in columns}
    if unknown:
        raise KeyError(f"unknown columns {sorted(unknown)}")
    lengths = {len(v) for v in data.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of unequal length {sorted(lengths)}")
    k = lengths.pop() if lengths else 0
    n = group[columns[0][0]].shape[0]
    if k == 0:
        return n
    for name, dtype, _ in columns:
        missing = _missing(dtype)
        ds = group[name]
        ds.resize((n + k,))
        ds[n:] = [missing if v is None else v for v in data[name]] if name in data else [missing] * k
    return n


def _append_dicts(group: h5py.Group, columns, rows: list[dict]) -> int:
    """Append {column: value} rows (the table's layout applied in one place: `_append_rows`)."""
    names = dict.fromkeys([*(c[0] for c in columns), *(k for r in rows for k in r)])
    return _append_rows(group, columns, {k: [r.get(k) for r in rows] for k in names})


class Store:
    """Append-only writer for one run file. Use `create` for a new run and `reopen` to resume one."""

    def __init__(self, f: h5py.File):
        self.f = f
        self.path = Path(f.filename)

    @classmethod
    def create(cls, path: Path, attrs: dict, hosts: Iterable[dict], overwrite: bool = False) -> "Store":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not overwrite:
            raise UsageError(f"--output: {str(path)!r} already exists; pass --overwrite")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        f = h5py.File(tmp, "w", libver="latest")
        f.attrs.update({"schema_version": SCHEMA_VERSION, "mpibench_version": __version__,
                        "format": "mpibench", "complete": False})
        for k, v in attrs.items():
            f.attrs[k] = v
        _create_columns(f.create_group("hosts"), HOST_COLUMNS, 16)
        _append_dicts(f["hosts"], HOST_COLUMNS, list(hosts))
        _create_columns(f.create_group("tasks"), TASK_COLUMNS, _CHUNK)
        _create_columns(f.create_group("energy"), TRACE_COLUMNS, 1024)
        _create_columns(f.create_group("scaling"), SCALING_COLUMNS, 64)
        raw = f.create_group("raw")
        for p in PHASES:
            ds = raw.create_dataset(f"{p}_ns", shape=(0,), maxshape=(None,), chunks=(_RAW_CHUNK,),
                                    dtype="i8")
            ds.attrs["description"] = f"{p} phase time of every measured iteration, ns"
        f.close()
        os.replace(tmp, path)  # an old file is replaced only now, when the new one is complete
        return cls.reopen(path)

    @classmethod
    def reopen(cls, path: Path) -> "Store":
        f = h5py.File(path, "r+", libver="latest")
        f.swmr_mode = True
        return cls(f)

    @property
    def n_tasks(self) -> int:
        return self.f["tasks/task_id"].shape[0]

    def append(self, row: dict, raw_ns: dict[str, np.ndarray] | None = None,
               energy_trace: list[tuple[float, str, float]] | None = None) -> None:
        """Write one task's row, raw samples and counter trace, then flush: then it survives a crash."""
        if energy_trace:
            times, domains, values = zip(*energy_trace)
            k = len(times)
            _append_rows(self.f["energy"], TRACE_COLUMNS, {
                "host": [row.get("host")] * k, "rank": [row.get("rank")] * k, "task_id": [row["task_id"]] * k,
                "time_s": times, "domain": domains, "value_j": values})
        self.append_many([row], [raw_ns])

    def append_many(self, rows: list[dict], raws: list[dict[str, np.ndarray] | None]) -> None:
        """Task rows with their raw samples (raws[i] for rows[i], None: none), in one write, then flush."""
        raw = self.f["raw"]
        offset = raw[f"{PHASES[0]}_ns"].shape[0]
        counts = [0 if r is None else len(r[PHASES[0]]) for r in raws]
        if sum(counts):
            for p in PHASES:
                ds = raw[f"{p}_ns"]
                ds.resize((offset + sum(counts),))
                ds[offset:] = np.concatenate([np.asarray(r[p], dtype=np.int64) for r in raws if r is not None])
        offsets = offset + np.cumsum([0, *counts])[:-1]
        _append_dicts(self.f["tasks"], TASK_COLUMNS, [{**row, "raw_offset": int(o), "raw_count": c}
                                                      for row, o, c in zip(rows, offsets, counts, strict=True)])
        self.f.flush()

    def append_scaling(self, row: dict) -> None:
        _append_dicts(self.f["scaling"], SCALING_COLUMNS, [row])
        self.f.flush()

    def add_hosts(self, hosts: Iterable[dict]) -> None:
        """Rows for nodes not in the file yet (a resumed run may land on other nodes)."""
        known = set(self.f["hosts/host"].asstr()[:])
        _append_dicts(self.f["hosts"], HOST_COLUMNS, [h for h in hosts if h["host"] not in known])
        self.f.flush()

    def read(self, group: str, *names: str) -> dict[str, np.ndarray]:
        """Some columns of a group of the open file, trimmed to the shortest (a killed writer)."""
        return _read_group(self.f[group], names)

    def set_attrs(self, **attrs) -> None:
        for k, v in attrs.items():
            self.f.attrs[k] = v
        self.f.flush()

    def close(self, complete: bool = True) -> None:
        if self.f:
            self.set_attrs(end_time=_now(), complete=complete)
            self.f.close()
            self.f = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------- reading


def open_run(path: str | Path) -> h5py.File:
    """Open a run file for reading (also one whose writer was killed); refuse what is not ours."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{str(p)!r}: no such file")
    try:
        f = h5py.File(p, "r", swmr=True, libver="latest")
    except OSError as err:
        raise UsageError(f"{str(p)!r} is not an HDF5 file mpibench can read ({err})") from None
    if f.attrs.get("format") != "mpibench" or "tasks" not in f:
        f.close()
        raise UsageError(f"{str(p)!r} is not an mpibench results file")
    version = int(f.attrs.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        f.close()
        raise UsageError(f"{str(p)!r} has schema version {version}; this mpibench reads up to "
                         f"{SCHEMA_VERSION}: upgrade mpibench")
    return f


def _read_group(g: h5py.Group, names: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every column of a group (or only `names`), trimmed to the shortest."""
    out = {}
    for name in names or g:
        ds = g[name]
        out[name] = ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]
    n = min((len(v) for v in out.values()), default=0)  # a killed writer may leave one column longer
    return {k: v[:n] for k, v in out.items()}


def read_tasks(path: str | Path) -> dict[str, np.ndarray]:
    """The /tasks table as {column: array}; `pandas.DataFrame(read_tasks(p))` gives a frame."""
    with open_run(path) as f:
        return _read_group(f["tasks"])


def read_hosts(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return _read_group(f["hosts"])


def read_energy_trace(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return _read_group(f["energy"]) if "energy" in f else {}


def read_scaling(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return _read_group(f["scaling"]) if "scaling" in f else {}


def read_raw(path: str | Path, offset: int, count: int) -> dict[str, np.ndarray]:
    """Raw per-phase nanoseconds of one task."""
    with open_run(path) as f:
        return {p: f[f"raw/{p}_ns"][offset:offset + count] for p in PHASES}


def read_attrs(path: str | Path) -> dict[str, Any]:
    with open_run(path) as f:
        return dict(f.attrs)


# ---------------------------------------------------------------- JSON lines


class JsonlWriter:
    """One JSON line per task, appended as results arrive (the prototype's format).

    An existing file is continued (--resume), or emptied first with overwrite=True (--overwrite).
    """

    def __init__(self, path: Path, overwrite: bool = False):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "w" if overwrite else "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else _plain(v))
                 for k, v in row.items()}
        self.fh.write(json.dumps(clean) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v
