"""The HDF5 file: one per run, rank 0 the only writer, committed in groups while readers read along.

Layout (all datasets chunked and appendable, created up front so the writer can run in SWMR mode):

    /            attributes: schema_version, mpibench_version, config_yaml, start/end time, ...
    /hosts/<col> one row per node
    /tasks/<col> one row per finished task; equal-length 1-D columns, strings fixed-size UTF-8
    /raw/<phase>_ns  per-iteration nanoseconds of every task, rows [raw_offset, raw_offset+raw_count)
    /scaling/<col>   --mode scaling: one row per task and rank (or node) count
    /energy/<col>    raw energy counter samples (time, domain, value) read during the tasks
    /log/<col>       lines worth keeping (how --optimal chose)

Why it survives a SIGKILL and live readers: in SWMR mode HDF5 keeps every flushed state readable,
but only for fixed-size data; variable-length strings live in the global heap, which SWMR does not
protect ("bad heap index"). So every string is fixed-size, and the attributes that change during a run
(STATE_ATTRS) are created fixed-size with the file and rewritten in place. A killed writer's file is
readable as it is; `recover` copies it into a fresh one so it can be appended to again.

No torch and no MPI here: analysis reads these files on a laptop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import h5py
import numpy as np

from mpibench import SCHEMA_VERSION, __version__
from mpibench import hdf5io
from mpibench.errors import StoreError, UsageError
from mpibench.result import SCALING_COLUMNS, TASK_COLUMNS
from mpibench.stats import PHASES
from mpibench.task import Column

STR = h5py.string_dtype("utf-8")

#: /hosts: one row per node.
HOST_COLUMNS: tuple[Column, ...] = (
    Column("host", "str", "hostname", 128),
    Column("cpu_model", "str", "CPU model name", 128),
    Column("cores", "i8", "logical CPUs on the node"),
    Column("memory_gib", "f8", "memory of the node, GiB"),
    Column("gpus", "str", "JSON list of GPUs: name, uuid, memory", 4096),
    Column("ranks", "str", "MPI ranks on the node, comma-separated", 4096),
    Column("idle_power_w", "str", "JSON: idle power per energy domain measured at start, W (null: unreadable)",
           1024),
    Column("energy_status", "str", "what the node's energy counters allow: ok, or why not (absent, permission, "
                                   "stuck: a counter stood still over the idle window, ...)"),
    Column("energy_reason", "str", "the sentence behind an energy_status other than ok", 512),
    Column("gemm_tflops", "str", "JSON: TFLOP/s a square matmul reached at start, per device (cpu, cuda:i) and "
                                 "precision (null: it cannot run it; absent: not in the sweep); cpu's `threads`: "
                                 "with how many", 2048),
)

#: /energy: the raw counter samples read during the tasks.
TRACE_COLUMNS: tuple[Column, ...] = (
    Column("host", "str", "node of the rank that read the counter", 128),
    Column("rank", "i8", "MPI rank that read it"),
    Column("task_id", "i8", "task whose window the sample fell in"),
    Column("time_s", "f8", "Unix time of the sample, s"),
    Column("domain", "str", "cpu-package-N, dram-N or gpu-<uuid>"),
    Column("value_j", "f8", "raw counter value, J (wraps are the reader's to undo)"),
)

#: Bytes per chunk of a column: small files for short runs, few chunks for long ones.
_CHUNK_BYTES = 4096
_RAW_CHUNK = 8192
#: Rows, and raw samples, that make a commit due however young the oldest pending result is.
MAX_PENDING_ROWS = 4096
MAX_PENDING_SAMPLES = 1 << 22
#: Free space a commit leaves untouched (HDF5's metadata and the file's close need some).
RESERVE_BYTES = 8 << 20
#: Run-state attributes: created fixed-size with the file, rewritten in place while readers read it.
STATE_ATTRS = {"complete": np.dtype(bool), "end_time": h5py.string_dtype("utf-8", 32),
               "stopped_by": h5py.string_dtype("utf-8", 32)}

#: What a column holds where a row has no value.
_MISSING = {"str": "", "f8": math.nan, "i8": -1, "?": False}


def _h5type(c: Column):
    return h5py.string_dtype("utf-8", c.size) if c.dtype == "str" else np.dtype(c.dtype)


@functools.lru_cache(maxsize=4096)  # most values repeat (status, host, domain, precision, ...)
def fit(text: str, size: int) -> bytes:
    """`text` as UTF-8 in at most `size` bytes: cut at a character boundary, ending in "…" when cut."""
    b = text.encode("utf-8", "replace")
    if len(b) <= size:
        return b
    return b[:size - 3].decode("utf-8", "ignore").encode() + "…".encode()


def _array(c: Column, values: Sequence) -> np.ndarray:
    """One column's new values as an array of its stored type; None becomes the missing value."""
    if c.dtype == "str":
        size = c.size
        return np.array([fit("" if v is None else str(v), size) for v in values], dtype=_h5type(c))
    if isinstance(values, np.ndarray):
        return values.astype(c.dtype, copy=False)
    missing = _MISSING[c.dtype]
    return np.array([missing if v is None else v for v in values], dtype=c.dtype)


def _create_columns(group: h5py.Group, columns: Sequence[Column]) -> None:
    for c in columns:
        chunk = min(4096, max(8, _CHUNK_BYTES // c.size))
        ds = group.create_dataset(c.name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=_h5type(c))
        ds.attrs["description"] = c.description
        if c.unit:
            ds.attrs["unit"] = c.unit


def _append_columns(group: h5py.Group, columns: Sequence[Column], data: dict[str, Sequence], k: int) -> int:
    """Append k rows column-wise: one resize and one write per dataset, not one per value.

    `data` maps column names to k values each; a column left out, or None, gets the column's missing
    value. Returns the index of the first new row.
    """
    unknown = set(data) - {c.name for c in columns}
    if unknown:
        raise KeyError(f"unknown columns {sorted(unknown)}")
    n = group[columns[0].name].shape[0]
    if k:
        for c in columns:
            ds = group[c.name]
            ds.resize((n + k,))
            ds[n:] = _array(c, data[c.name]) if c.name in data else _array(c, [None] * k)
    return n


def _append_rows(group: h5py.Group, columns: Sequence[Column], rows: list[dict]) -> int:
    """Append {column: value} rows."""
    names = {k for r in rows for k in r}
    return _append_columns(group, columns, {k: [r.get(k) for r in rows] for k in names}, len(rows))


@dataclass
class _Pending:
    """Results received but not yet written: task rows, their raw samples, the counter traces by column."""

    rows: list[dict] = field(default_factory=list)
    raws: list[dict[str, np.ndarray] | None] = field(default_factory=list)
    trace: dict[str, list] = field(default_factory=lambda: {c.name: [] for c in TRACE_COLUMNS})
    samples: int = 0

    @property
    def trace_rows(self) -> int:
        return len(self.trace["time_s"])


class Store:
    """Append-only writer for one run file. Use `create` for a new run and `reopen` to resume one.

    Results are buffered (`append`) and written together (`commit`): one resize and one write per
    column per commit, then a flush. The file is in SWMR mode from the moment it appears, and holds only
    fixed-size types, so readers may read it while it is written and a killed writer leaves every
    committed row readable.
    """

    def __init__(self, f: h5py.File, path: Path | None = None):
        self.f = f
        self.path = Path(path or f.filename)
        self.pending = _Pending()
        self.broken = False
        self._slack: int | None = None  # bytes a commit may take beyond its data (chunks, metadata)

    @classmethod
    def create(cls, path: Path, attrs: dict, hosts: Iterable[dict], overwrite: bool = False) -> "Store":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not overwrite:
            raise UsageError(f"--output: {str(path)!r} already exists; pass --overwrite")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        f = h5py.File(tmp, "w", libver="latest")
        f.attrs.update({"schema_version": SCHEMA_VERSION, "mpibench_version": __version__, "format": "mpibench"})
        for k, dtype in STATE_ATTRS.items():
            f.attrs.create(k, data=False if dtype == bool else "", dtype=dtype)
        for k, v in attrs.items():
            f.attrs[k] = v
        _create_columns(f.create_group("hosts"), HOST_COLUMNS)
        _append_rows(f["hosts"], HOST_COLUMNS, list(hosts))
        _create_columns(f.create_group("tasks"), TASK_COLUMNS)
        _create_columns(f.create_group("energy"), TRACE_COLUMNS)
        _create_columns(f.create_group("scaling"), SCALING_COLUMNS)
        _create_columns(f.create_group("log"), LOG_COLUMNS)
        raw = f.create_group("raw")
        for p in PHASES:
            ds = raw.create_dataset(f"{p}_ns", shape=(0,), maxshape=(None,), chunks=(_RAW_CHUNK,), dtype="i8")
            ds.attrs["description"] = f"{p} phase time of every measured iteration, ns"
        f.swmr_mode = True  # before it is seen at `path`: a kill from here on leaves it readable
        os.replace(tmp, path)  # an old file is replaced only now, when the new one is complete
        return cls(f, path)

    @classmethod
    def reopen(cls, path: Path, resume: dict | None = None) -> "Store":
        """Open for appending; a `resume` note (start time, command line, world size) joins the
        `resumes` attribute first.

        The file is opened in SWMR mode at once: opened plainly for writing, HDF5 marks it so that
        nothing (no reader, no `recover`) can open it again if the writer is killed before SWMR mode is on.
        So the note is written fixed-size (no global heap, see the module's docstring)."""
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
        # readers hold the file's lock while they read it: wait for a moment without one
        f = h5py.File(when_unlocked(lambda: h5py.h5f.open(os.fsencode(str(path)),
                                                          h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)))
        if resume is not None:
            note = json.dumps(json.loads(_text(f.attrs.get("resumes", "[]"))) + [resume]).encode()
            f.attrs.create("resumes", data=note, dtype=h5py.string_dtype("utf-8", len(note)))
        for k, dtype in STATE_ATTRS.items():  # a file of an older schema: state attributes made fixed-size
            if k not in f.attrs or f.attrs.get_id(k).dtype != dtype:
                value = f.attrs.get(k, False if dtype == bool else "")
                f.attrs.create(k, data=value.decode() if isinstance(value, bytes) else value, dtype=dtype)
        f.flush()
        return cls(f, path)

    @property
    def n_tasks(self) -> int:
        return self.f["tasks/task_id"].shape[0] + len(self.pending.rows)

    def append(self, row: dict, raw_ns: dict[str, np.ndarray] | None = None,
               energy_trace: list[tuple[float, str, float]] | None = None) -> None:
        """Buffer one task's row, raw samples and counter trace; `commit` writes them."""
        unknown = set(row) - _TASK_NAMES
        if unknown:  # refused now: a bad row must not spoil the commit of the good ones
            raise KeyError(f"unknown columns {sorted(unknown)}")
        p = self.pending
        p.rows.append(row)
        p.raws.append(raw_ns)
        p.samples += 0 if raw_ns is None else len(raw_ns[PHASES[0]])
        if energy_trace:
            k = len(energy_trace)
            for name in ("host", "rank", "task_id"):
                p.trace[name] += [row.get(name)] * k
            for name, values in zip(("time_s", "domain", "value_j"), zip(*energy_trace)):
                p.trace[name] += values

    @property
    def full(self) -> bool:
        """Enough is pending that it should be written now."""
        return len(self.pending.rows) >= MAX_PENDING_ROWS or self.pending.samples >= MAX_PENDING_SAMPLES

    def commit(self) -> int:
        """Write what is pending (raw samples and traces first, the rows that point at them last), flush.

        Returns how many task rows it wrote. StoreError when the disk cannot take them: nothing of them
        is written then (they are dropped: never visible, so --resume measures them again), and every
        earlier row stays intact.
        """
        p = self.pending
        if not (p.rows or p.trace_rows):
            return 0
        self.pending = _Pending()
        self._check_space(p)
        try:
            raw = self.f["raw"]
            offset = raw[f"{PHASES[0]}_ns"].shape[0]
            counts = [0 if r is None else len(r[PHASES[0]]) for r in p.raws]
            if p.samples:
                for phase in PHASES:
                    ds = raw[f"{phase}_ns"]
                    ds.resize((offset + p.samples,))
                    ds[offset:] = np.concatenate([np.asarray(r[phase], dtype=np.int64) for r in p.raws if r])
            _append_columns(self.f["energy"], TRACE_COLUMNS, p.trace, p.trace_rows)
            offsets = offset + np.cumsum([0, *counts])[:-1]
            _append_rows(self.f["tasks"], TASK_COLUMNS, [{**row, "raw_offset": int(o), "raw_count": c}
                                                         for row, o, c in zip(p.rows, offsets, counts, strict=True)])
            self.f.flush()
        except (OSError, RuntimeError) as err:  # h5py reports a failed flush (ENOSPC) as RuntimeError
            self.broken = True
            raise StoreError(f"writing {self.path} failed ({err}); the rows written before are intact: "
                             f"finish with --resume {self.path}") from err
        return len(p.rows)

    def _check_space(self, p: _Pending) -> None:
        """Refuse a commit the disk cannot take, and allocate the blocks it will write before HDF5 writes a
        byte of it: a disk filled meanwhile (by anyone) refuses the commit here, instead of failing HDF5
        half-way through it (rows pointing at samples never written; a library that may crash closing)."""
        need = p.samples * 8 * len(PHASES) + len(p.rows) * ROW_BYTES + p.trace_rows * _TRACE_BYTES
        free = shutil.disk_usage(self.path.parent).free
        if free < need + RESERVE_BYTES:
            raise self._full(free, need, len(p.rows))
        if self._slack is None:  # one fresh chunk of every dataset, and room for HDF5's metadata
            sizes = []
            self.f.visititems(lambda _, o: sizes.append(o.chunks[0] * o.dtype.itemsize)
                              if isinstance(o, h5py.Dataset) and o.chunks else None)
            self._slack = sum(sizes) + (1 << 20)
        # from the end of what HDF5 has written, where its next writes go
        if hdf5io.allocate_ahead(self.f.id.get_vfd_handle(), self.f.id.get_filesize(), need + self._slack):
            raise self._full(shutil.disk_usage(self.path.parent).free, need, len(p.rows))

    def _full(self, free: int, need: int, rows: int) -> StoreError:
        return StoreError(f"{self.path.parent} is full ({free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB "
                          f"to write): stopped before writing {rows} result(s); the file is intact, "
                          f"finish with --resume {self.path} once there is space")

    def append_many(self, rows: list[dict], raws: list[dict[str, np.ndarray] | None]) -> None:
        """Task rows with their raw samples (raws[i] for rows[i], None: none), written at once."""
        for row, raw in zip(rows, raws, strict=True):
            self.append(row, raw)
        self.commit()

    def append_scaling(self, row: dict) -> None:
        _append_rows(self.f["scaling"], SCALING_COLUMNS, [row])
        self.f.flush()

    def log(self, *lines: str) -> None:
        """Lines worth keeping with the results (how --optimal chose), in /log."""
        _append_rows(self.f["log"], LOG_COLUMNS, [{"time": _now(), "line": line} for line in lines])
        self.f.flush()

    def add_hosts(self, hosts: Iterable[dict]) -> None:
        """Rows for nodes not in the file yet (a resumed run may land on other nodes)."""
        known = set(self.f["hosts/host"].asstr()[:])
        _append_rows(self.f["hosts"], HOST_COLUMNS, [h for h in hosts if h["host"] not in known])
        self.f.flush()

    def read(self, group: str, *names: str) -> dict[str, np.ndarray]:
        """Some columns of a group of the open file, trimmed to the shortest (a killed writer)."""
        return read_group(self.f[group], names)

    def set_state(self, **state) -> None:
        """Rewrite run-state attributes (STATE_ATTRS) in place: safe while readers read along."""
        for k, v in state.items():
            self.f.attrs.modify(k, v if STATE_ATTRS[k] == bool else fit(str(v), STATE_ATTRS[k].itemsize))
        self.f.flush()

    def close(self, complete: bool = True) -> None:
        """Commit what is pending and close.

        A broken file (a write failed inside HDF5) is not touched again: HDF5 may crash closing it
        (H5D__flush_all). It stays as a killed writer leaves it, readable and rebuilt by --resume; the
        process should end without closing it (MPI_Abort, os._exit)."""
        if not self.f or self.broken:
            return
        try:
            self.commit()
            self.set_state(end_time=_now(), complete=complete)
        finally:
            self.f.close()
            self.f = None
        try:  # the blocks allocated ahead and left unused lie beyond the end: a truncate frees them
            os.truncate(self.path, self.path.stat().st_size)
        except OSError:
            pass


#: /log: lines rank 0 keeps with the results.
LOG_COLUMNS: tuple[Column, ...] = (
    Column("time", "str", "when it was written", 32),
    Column("line", "str", "what happened (--optimal: how the configuration was chosen)", 4096),
)
ROW_BYTES = sum(c.size for c in TASK_COLUMNS)
_TASK_NAMES = frozenset(c.name for c in TASK_COLUMNS)
_TRACE_BYTES = sum(c.size for c in TRACE_COLUMNS)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------- reading


T = TypeVar("T")
#: How long a reader waits for a writer that holds the file alone (a --resume opening it).
LOCKED_WAIT_S = 10.0
#: What h5py raises when it reads a damaged file (a failed checksum, a missing object, a malformed value).
DAMAGE = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)
def when_unlocked(open_file: Callable[[], T]) -> T:
    """`open_file()`, tried again while another process holds the file's lock, for up to LOCKED_WAIT_S."""
    deadline = time.monotonic() + LOCKED_WAIT_S
    while True:
        try:
            return open_file()
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def open_run(path: str | Path) -> h5py.File:
    """Open a run file for reading (also one being written, or whose writer was killed). What is not
    ours, newer, truncated or damaged is refused with one UsageError line, within seconds."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{str(p)!r}: no such file")
    hdf5io.check_layout(p)
    try:
        f = when_unlocked(lambda: hdf5io.open_swmr(p))  # a writer may hold it alone for a moment
    except BlockingIOError:
        raise UsageError(f"{str(p)!r} stayed locked by its writer for {LOCKED_WAIT_S:g} s") from None
    except DAMAGE as err:
        raise UsageError(f"{str(p)!r} is damaged, or not an HDF5 file mpibench can read "
                         f"({_one_line(err)})") from None
    try:
        _check_ours(f, p)
    except DAMAGE as err:
        f.close()
        raise damaged(p, err) from None
    except BaseException:
        f.close()
        raise
    return f


@contextlib.contextmanager
def reading(path: str | Path):
    """`with reading(path) as f:` is open_run, and what h5py raises while the block reads a damaged file
    becomes one UsageError line (`... is damaged: ...`)."""
    with open_run(path) as f:
        try:
            yield f
        except DAMAGE as err:
            raise damaged(path, err) from None


def damaged(path: str | Path, err: BaseException) -> UsageError:
    return UsageError(f"{str(path)!r} is damaged: {_one_line(err)}")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err.args[0] if isinstance(err, KeyError) and err.args else err).split())
    return (text[:300] + "…" if len(text) > 300 else text) or type(err).__name__


def _check_ours(f: h5py.File, p: Path) -> None:
    """Refuse a file that is not mpibench's, is newer, or has malformed attributes (UsageError)."""
    attrs = f.attrs
    if _text(attrs.get("format")) != "mpibench" or "tasks" not in f or not isinstance(f["tasks"], h5py.Group):
        raise UsageError(f"{str(p)!r} is not an mpibench results file")  # f["tasks"]: KeyError when damaged
    version = attrs.get("schema_version")
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        raise UsageError(f"{str(p)!r} is damaged: attribute schema_version is {_shown(version)}, not an integer")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{str(p)!r} has schema version {version}; this mpibench reads up to "
                         f"{SCHEMA_VERSION}: upgrade mpibench")
    for name, kind, ok in (("complete", "true or false", (bool, np.bool_)), ("config_yaml", "text", (str, bytes))):
        if name in attrs and not isinstance(attrs[name], ok):
            raise UsageError(f"{str(p)!r} is damaged: attribute {name} is {_shown(attrs[name])}, not {kind}")


def _shown(v) -> str:
    text = repr(_text(v)) if v is not None else "missing"
    return text if len(text) <= 60 else text[:57] + "..."


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
    with reading(path) as f:
        return read_group(f["tasks"])


def read_hosts(path: str | Path) -> dict[str, np.ndarray]:
    with reading(path) as f:
        return read_group(f["hosts"])


def read_energy_trace(path: str | Path) -> dict[str, np.ndarray]:
    with reading(path) as f:
        return read_group(f["energy"]) if "energy" in f else {}


def read_scaling(path: str | Path) -> dict[str, np.ndarray]:
    with reading(path) as f:
        return read_group(f["scaling"]) if "scaling" in f else {}


def read_raw(path: str | Path, offset: int, count: int) -> dict[str, np.ndarray]:
    """Raw per-phase nanoseconds of one task."""
    with reading(path) as f:
        return {p: f[f"raw/{p}_ns"][offset:offset + count] for p in PHASES}


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes as plain values (fixed-size strings decoded)."""
    with reading(path) as f:
        return {k: _text(v) for k, v in f.attrs.items()}


def read_config(path: str | Path) -> dict:
    """The run's stored config (`config_yaml`: what --resume and --optimal plan from) as parsed YAML.
    UsageError, one line, when it is missing, not text, not YAML or not a mapping."""
    import yaml

    text = read_attrs(path).get("config_yaml")
    if text is None:
        raise UsageError(f"{str(path)!r} has no stored config (its attribute config_yaml is missing)")
    where = f"{str(path)!r} is damaged: its stored config (attribute config_yaml)"
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{where} is not YAML ({_one_line(err)})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"{where} is {'empty' if cfg is None else 'a ' + type(cfg).__name__}, not a mapping")
    return cfg


def read_log(path: str | Path) -> list[str]:
    """The lines rank 0 kept in /log (--optimal: how the configuration was chosen)."""
    with reading(path) as f:
        return list(read_group(f["log"])["line"]) if "log" in f else []


def _text(v):
    """Bytes (a fixed-size string attribute) as str; anything else as a plain value."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else plain(v)


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
