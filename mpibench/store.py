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
from mpibench.result import SCALING_COLUMNS, TASK_COLUMNS
from mpibench.stats import PHASES
from mpibench.task import Column

STR = h5py.string_dtype("utf-8")

#: /hosts: one row per node.
HOST_COLUMNS: tuple[Column, ...] = (
    Column("host", "str", "hostname"),
    Column("cpu_model", "str", "CPU model name"),
    Column("cores", "i8", "logical CPUs on the node"),
    Column("memory_gib", "f8", "memory of the node, GiB"),
    Column("gpus", "str", "JSON list of GPUs: name, uuid, memory"),
    Column("ranks", "str", "MPI ranks on the node, comma-separated"),
    Column("idle_power_w", "str", "JSON: idle power per energy domain measured at start, W (null: unreadable)"),
    Column("energy_status", "str", "what the node's energy counters allow: ok, or why not (absent, permission, ...)"),
)

#: /energy: the raw counter samples read during the tasks.
TRACE_COLUMNS: tuple[Column, ...] = (
    Column("host", "str", "node of the rank that read the counter"),
    Column("rank", "i8", "MPI rank that read it"),
    Column("task_id", "i8", "task whose window the sample fell in"),
    Column("time_s", "f8", "Unix time of the sample, s"),
    Column("domain", "str", "cpu-package-N, dram-N or gpu-<uuid>"),
    Column("value_j", "f8", "raw counter value, J (wraps are the reader's to undo)"),
)

_CHUNK = 256
_RAW_CHUNK = 16384


#: What a column holds where a row has no value.
_MISSING = {"str": "", "f8": math.nan, "i8": -1, "?": False}


def _create_columns(group: h5py.Group, columns: Sequence[Column], chunk: int) -> None:
    for c in columns:
        ds = group.create_dataset(c.name, shape=(0,), maxshape=(None,), chunks=(chunk,),
                                  dtype=STR if c.dtype == "str" else c.dtype)
        ds.attrs["description"] = c.description
        if c.unit:
            ds.attrs["unit"] = c.unit


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
        missing = _MISSING[dtype]
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
        return read_group(self.f[group], names)

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


def read_group(g: h5py.Group, names: Iterable[str] = ()) -> dict[str, np.ndarray]:
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
        return read_group(f["tasks"])


def read_hosts(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return read_group(f["hosts"])


def read_energy_trace(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return read_group(f["energy"]) if "energy" in f else {}


def read_scaling(path: str | Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        return read_group(f["scaling"]) if "scaling" in f else {}


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
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else plain(v))
                 for k, v in row.items()}
        self.fh.write(json.dumps(clean) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def plain(v):
    """A numpy scalar as the plain Python value (for JSON and comparisons)."""
    return v.item() if isinstance(v, np.generic) else v
