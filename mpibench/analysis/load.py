"""One run file, read for analysis: facts, hosts, tasks (with statistics streamed from /raw), scaling."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpibench.analysis import rawstats
from mpibench.analysis.table import col, config_of, key_columns, n_rows, with_figures
from mpibench.store import plain, read_group, reading
from mpibench.task import DEFAULTS


@dataclass
class Run:
    path: Path
    attrs: dict[str, Any]
    hosts: dict[str, np.ndarray]
    tasks: dict[str, np.ndarray]  # the /tasks columns plus rawstats.COLUMNS
    scaling: dict[str, np.ndarray] | None = None
    missing: list[dict] = field(default_factory=list)  # planned configurations with no row

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def n_samples(self) -> int:
        return int(np.sum(self.tasks.get("raw_n", 0)))

    def package_versions(self) -> dict[str, str]:
        try:
            versions = json.loads(self.attrs.get("package_versions", "{}"))
        except (TypeError, ValueError):
            return {}
        return versions if isinstance(versions, dict) else {}


def load_run(path: str | Path, block_rows: int = rawstats.BLOCK_ROWS) -> Run:
    """Read everything analysis needs in one pass; a file that is not mpibench's, or is damaged, is a
    UsageError (one line)."""
    with reading(path) as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        hosts = read_group(f["hosts"]) if "hosts" in f else {}
        tasks = with_defaults(read_group(f["tasks"]))
        if "raw" in f and n_rows(tasks) and "raw_offset" in tasks:
            tasks.update(rawstats.stream(f, tasks["raw_offset"], tasks["raw_count"], block_rows))
            server = col(tasks, "scenario", "offline") == "server"  # its raw samples are batches, not requests:
            for c in ("p99_ci_low_ms", "p99_ci_high_ms"):  # they bound no request's p99
                tasks[c] = np.where(server, np.nan, tasks[c])
        scaling = read_group(f["scaling"]) if "scaling" in f else None
    run = Run(Path(path), attrs, hosts, tasks, scaling if scaling and n_rows(scaling) else None)
    run.missing = missing_configs(attrs.get("config_yaml", ""), tasks)
    return run


def with_defaults(tasks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows written before a key column existed hold ""/NaN there; they had its default value."""
    for name, default in DEFAULTS.items():
        if name in tasks:
            v = tasks[name]
            empty = np.isnan(v.astype(float)) if isinstance(default, float) else (v == "")
            tasks[name] = np.where(empty, default, v).astype(v.dtype)
    return with_figures(tasks)


def missing_configs(config_yaml: str, tasks: dict[str, np.ndarray]) -> list[dict]:
    """Configurations the run planned but has no row for (a killed or interrupted job).

    The plan is rebuilt from the file's own config; where that is impossible here (a model directory
    that exists only on the cluster, an older config format) the answer is simply unknown: [].
    """
    try:
        import yaml

        from mpibench.config import build
        from mpibench.plan import expand

        planned = expand(build(yaml.safe_load(config_yaml) or {}))
    except Exception:  # noqa: BLE001 - any failure means "cannot tell", never a failed analysis
        return []
    plans = [t.to_dict() for t in planned]
    auto = any(p["threads"] == 0 for p in plans)  # threads 0 ("auto") became a count in each row
    columns = [c for c in key_columns(tasks) if plans and c in plans[0] and not (c == "threads" and auto)]
    configs = (config_of(tasks, i) for i in range(n_rows(tasks)))
    have = {tuple(cfg[c] for c in columns) for cfg in configs}
    return [p for p in plans if tuple(p[c] for c in columns) not in have]


def _attr(v):
    """A file attribute as a plain value; a byte string (written by an older h5py) decoded."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else plain(v)
