"""One run file, read for analysis: facts, hosts, tasks (with statistics streamed from /raw), scaling."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpibench.analysis import rawstats
from mpibench.analysis.table import KEY, n_rows
from mpibench.store import _read_group, open_run


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
            return json.loads(self.attrs.get("package_versions", "{}"))
        except (TypeError, ValueError):
            return {}


def load_run(path: str | Path, block_rows: int = rawstats.BLOCK_ROWS) -> Run:
    """Read everything analysis needs in one pass; refuses files that are not mpibench's (UsageError)."""
    with open_run(path) as f:
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        hosts = _read_group(f["hosts"]) if "hosts" in f else {}
        tasks = _read_group(f["tasks"])
        if "raw" in f and n_rows(tasks) and "raw_offset" in tasks:
            tasks.update(rawstats.stream(f, tasks["raw_offset"], tasks["raw_count"], block_rows))
        scaling = _read_group(f["scaling"]) if "scaling" in f else None
    run = Run(Path(path), attrs, hosts, tasks, scaling if scaling and n_rows(scaling) else None)
    run.missing = missing_configs(attrs.get("config_yaml", ""), tasks)
    return run


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
    width = len(KEY) - any(t.threads == 0 for t in planned)  # threads 0 ("auto") became a count
    have = {k[:width] for k in zip(*(np.asarray(tasks[c]).tolist() for c in KEY))} if n_rows(tasks) else set()
    return [t.to_dict() for t in planned if t.key[:width] not in have]


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v.item() if isinstance(v, np.generic) else v
