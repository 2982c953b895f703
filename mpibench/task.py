"""The Task, and the sweep dimensions declared once, as its fields.

A sweep dimension (model, device, batch size, ...) is a Task field made with `dimension(...)`: its
description, how it reads in a label, and its role in the analysis live beside it. Everything else is
derived from these declarations: the /tasks and /scaling columns, what identifies a configuration across
runs, labels, the analysis' series, panels and lines, and the column reference in docs/results-file.md.
Adding a dimension means adding a field here (and the code that plans and measures it), nothing else.

No torch, no MPI, no h5py: analysis imports this on a laptop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, asdict, dataclass
from typing import Any, NamedTuple

#: The roles a dimension plays in the analysis.
#: workload: what the job is; never traded for speed (a shorter sequence is always faster, and not the same job)
#: device:   where it runs; the optimum is stated per device
#: batch:    the batch size, the profile's x axis
#: variant:  how the same job is run on the device (precision, threads, ...); figures draw one line each
ROLES = ("workload", "device", "batch", "variant")

#: Units read from a column's name (units live in names: `latency_ms`, `energy_j`).
UNITS = {"_ms": "ms", "_ns": "ns", "_s": "s", "_sps": "samples/s", "_j": "J", "_w": "W", "_gib": "GiB",
         "_tflops": "TFLOP/s"}


#: Bytes a string column holds unless it says otherwise; longer values are cut (ending in "…").
STR_BYTES = 64


class Column(NamedTuple):
    """One column of a results-file table: name, storage type (i8, f8, ?, str) and what it means.

    Strings are stored fixed-size (`width` bytes of UTF-8, default STR_BYTES): variable-length strings
    live in HDF5's global heap, which readers of a file being written cannot read safely.
    """

    name: str
    dtype: str
    description: str
    width: int = 0

    @property
    def size(self) -> int:
        """Bytes per value: the string width, or the number's."""
        return (self.width or STR_BYTES) if self.dtype == "str" else {"i8": 8, "f8": 8, "?": 1}[self.dtype]

    @property
    def unit(self) -> str:
        """The unit its name ends in (`throughput_sps`: samples/s), or "" for counts, labels and flags."""
        return next((u for suffix, u in UNITS.items() if self.name.endswith(suffix)), "")


_DTYPES = {"int": "i8", "float": "f8", "str": "str", "bool": "?"}


def dimension(description: str, role: str, label: str = "{}", default: Any = MISSING, width: int = 0) -> Any:
    """A sweep dimension: a stored, identifying Task field.

    `label` formats the value in labels (`bs={}`). A dimension with a `default` is optional: labels leave
    it out at that value, and rows written before the column existed are read as having it.
    """
    assert role in ROLES, role
    return dataclasses.field(default=default, metadata={
        "column": description, "dimension": True, "role": role, "label": label, "width": width})


def stored(description: str, default: Any = MISSING) -> Any:
    """A Task field stored in its /tasks row that does not identify a configuration."""
    return dataclasses.field(default=default, metadata={"column": description})


@dataclass(frozen=True)
class Task:
    """One configuration to measure. Frozen and hashable: the unit rank 0 hands out."""

    task_id: int = stored("position of the task in the planned sweep")
    model: str = dimension("model name or path", "workload", width=256)
    device: str = dimension("cpu, cuda or cuda:N as planned", "device")
    precision: str = dimension("fp32, bf16 or fp16 (weights cast to that type)", "variant")
    batch_size: int = dimension("samples per forward pass", "batch", "bs={}")
    seq_len: int = dimension("tokens per sample (inputs padded/truncated to exactly this)", "workload",
                             "seq={}")
    threads: int = dimension("intra-op threads the task ran with (torch.set_num_threads)", "variant",
                             "threads={}")
    est_cost_s: float = 0.0  # planning only: the expected seconds, for ordering and the ETA
    scenario: str = dimension("offline, single-stream or server", "workload", default="offline")
    backend: str = dimension("eager or compile (torch.compile)", "variant", default="eager")
    attention: str = dimension("attention implementation: sdpa or eager", "variant", "attn={}", default="sdpa")
    rate_sps: float = dimension("server scenario: the planned arrival rate, samples/s (0: searched)", "workload",
                                "rate={:g}/s", default=0.0)
    workload: str = dimension("classify (a label per sequence) or generate (--max-new-tokens tokens per sequence: "
                              "greedy, KV cache)", "workload", default="classify")
    stage: str = stored("--optimal: search-N (short measurements of the grid) or final; empty in a sweep",
                        default="")
    repeat: int = stored("--repeats: which of the configuration's measurement windows this row is (0, 1, ...)",
                         default=0)
    time_scale: float = 1.0  # --optimal: measure this many times longer (or shorter) than configured

    @property
    def key(self) -> tuple:
        """What identifies a configuration across runs (for comparisons)."""
        return tuple(getattr(self, d) for d in DIMENSIONS)

    def dimensions(self) -> dict[str, Any]:
        """{dimension: value}, in declaration order."""
        return {d: getattr(self, d) for d in DIMENSIONS}

    def columns(self) -> dict[str, Any]:
        """The task's part of its /tasks row."""
        return {c.name: getattr(self, c.name) for c in TASK_FIELD_COLUMNS}

    def label(self, threads: int | None = None) -> str:
        """`cpu fp32 bs=4 seq=128 threads=2 server rate=20/s [final]` (defaults and the model left out)."""
        values = {**self.dimensions(), "threads": threads or self.threads or "auto"}
        stage = f" [{self.stage}]" if self.stage else ""
        window = f" #{self.repeat + 1}" if self.repeat else ""
        return format_label(values, omit=("model",)) + window + stage

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = [f for f in dataclasses.fields(Task) if "column" in f.metadata]
#: The Task fields stored as /tasks columns, in file order.
TASK_FIELD_COLUMNS: tuple[Column, ...] = tuple(
    Column(f.name, _DTYPES[f.type], f.metadata["column"], f.metadata.get("width", 0)) for f in _FIELDS)
#: Every sweep dimension, in declaration order: together they identify a configuration.
DIMENSIONS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("dimension"))
#: Dimensions every file has; the others may be missing from older files and tables.
CORE: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("dimension") and f.default is MISSING)
#: Optional dimensions with the value a row had before the column existed (also the one labels omit).
DEFAULTS: dict[str, Any] = {f.name: f.default for f in _FIELDS
                            if f.metadata.get("dimension") and f.default is not MISSING}
#: {dimension: its role} (see ROLES).
ROLE: dict[str, str] = {f.name: f.metadata["role"] for f in _FIELDS if f.metadata.get("dimension")}
_LABEL: dict[str, str] = {f.name: f.metadata["label"] for f in _FIELDS if f.metadata.get("dimension")}
#: The order of a label's parts: the dimensions, the model last (the context usually names it).
LABEL_ORDER: tuple[str, ...] = tuple(d for d in DIMENSIONS if d != "model") + ("model",)


def with_role(*roles: str) -> tuple[str, ...]:
    """The dimensions that play these roles, in declaration order."""
    return tuple(d for d in DIMENSIONS if ROLE[d] in roles)


def format_label(values: dict[str, Any], omit: tuple[str, ...] = ()) -> str:
    """`cpu fp32 bs=4 seq=128 threads=2`: the dimensions in `values`, leaving out `omit` and defaults."""
    parts = []
    for name in LABEL_ORDER:
        value = values.get(name)
        if name in omit or (name in DEFAULTS and _is_default(name, value)):
            continue
        parts.append(_LABEL[name].format(value))
    return " ".join(parts)


def _is_default(name: str, value: Any) -> bool:
    """Unset, empty, NaN (a column an older row never filled) or the default."""
    return value is None or value == "" or value != value or value == DEFAULTS[name]
