"""`python -m mpibench.export`: run files as CSV, Parquet or JSON lines, for spreadsheets, pandas, dashboards.

    python -m mpibench.export results/cpu.h5 --format csv --out cpu.csv
    python -m mpibench.export results/a.h5 results/b.h5 --format parquet --out ab.parquet \
        --columns model,batch_size,throughput_sps

Writes /tasks to NAME.EXT, /hosts to NAME.hosts.EXT and the root attributes to NAME.attrs.json
(out.csv, out.hosts.csv, out.attrs.json). Several runs are concatenated in the order given, behind a
first column `run` (the path as given); a column some runs lack (an older schema) is empty in their
rows. Columns come in the order the schema declares them (the order the file created them in; HDF5
itself lists them alphabetically), then any others the file has.

No MPI, no torch and no pandas; pyarrow for Parquet only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mpibench.cli import Parser, check_location, main_guard
from mpibench.errors import UsageError
from mpibench.result import TASK_COLUMNS
from mpibench.store import HOST_COLUMNS, read_attrs, read_hosts, read_tasks

NEEDS_PYARROW = "--format parquet needs pyarrow: pip install 'mpibench[parquet]'"
#: A table to write: {column: plain Python values}, None where a row has no value.
Table = dict[str, list]

EPILOG = """files written, for --out NAME.EXT (e.g. out.csv):
  NAME.EXT              /tasks: one row per task, every column (or those of --columns)
  NAME.hosts.EXT        /hosts: one row per node, in the same format (out.hosts.csv)
  NAME.attrs.json       the root attributes of each run: {"RUN.h5": {attribute: value}} (out.attrs.json)
With several runs, both tables start with a column `run`: the path of the row's run, as given.
CSV: NaN and missing values are empty fields, booleans true/false. JSON lines: NaN, inf and missing are null.

examples:
  python -m mpibench.export results/quick.h5 --format csv --out quick.csv
  python -m mpibench.export results/v1.h5 results/v2.h5 --format parquet --out both.parquet
  python -m mpibench.export results/quick.h5 --format jsonl --out quick.jsonl --columns task_id,status,throughput_sps

Exit status: 0 written, 2 bad input (a file that is not an mpibench run, is damaged or has a newer schema;
a missing file; an output that exists without --overwrite or cannot be written; an unknown column); nothing
is written then, and no existing file is touched."""


def build_parser() -> Parser:
    p = Parser(prog="python -m mpibench.export", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Export the /tasks and /hosts tables and the root attributes of run files.")
    p.add_argument("runs", nargs="+", metavar="RUN.h5", help="the run files, concatenated in this order")
    p.add_argument("--format", required=True, choices=tuple(WRITERS), help="output format")
    p.add_argument("--out", required=True, metavar="PATH", help="the /tasks file; the other two go beside it")
    p.add_argument("--columns", metavar="A,B,...", help="only these /tasks columns (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    return p


def outputs(out: Path) -> dict[str, Path]:
    """The three files an export writes: tasks (PATH), hosts and attrs beside it."""
    return {"tasks": out, "hosts": out.with_name(f"{out.stem}.hosts{out.suffix}"),
            "attrs": out.with_name(f"{out.stem}.attrs.json")}


def check_outputs(paths: Sequence[Path], runs: Sequence[str], overwrite: bool) -> None:
    """Every output can be written, and none replaces an input or (without overwrite) an existing file."""
    inputs = {Path(r).resolve() for r in runs}
    for path in paths:
        check_location(path, "--out")
        if path.resolve() in inputs:
            raise UsageError(f"--out: {str(path)!r} is one of the runs to export; choose another path")
        if path.exists() and not overwrite:
            raise UsageError(f"--out: {str(path)!r} already exists; pass --overwrite to replace it, "
                             "or choose another path")


def ordered(data: dict[str, np.ndarray], declared: Sequence[str]) -> list[str]:
    return [c for c in declared if c in data] + [c for c in data if c not in declared]


def union(tables: Sequence[dict[str, np.ndarray]], declared: Sequence[str]) -> list[str]:
    """Every column of the tables: the first one's, then those new in each next one."""
    names: list[str] = []
    for data in tables:
        names += [c for c in ordered(data, declared) if c not in names]
    return names


def combine(runs: Sequence[tuple[str, dict[str, np.ndarray]]], names: Sequence[str]) -> Table:
    """One table of these columns from each run's {column: array}, with a first column `run` when there
    are several; a run without a column has None there."""
    sizes = [len(next(iter(data.values()), ())) for _, data in runs]
    table: Table = {"run": [r for (r, _), n in zip(runs, sizes) for _ in range(n)]} if len(runs) > 1 else {}
    for name in names:
        table[name] = [v for (_, data), n in zip(runs, sizes)
                       for v in (data[name].tolist() if name in data else [None] * n)]
    return table


def chosen_columns(text: str | None, available: list[str], several: bool) -> list[str]:
    """The /tasks columns --columns names, in its order (all without it); UsageError naming one the runs
    do not have."""
    if text is None:
        return available
    wanted = list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    for name in wanted:
        if name not in available and not (several and name == "run"):
            raise UsageError(f"--columns: no column {name!r} in /tasks; it has {', '.join(available[:10])}, ... "
                             f"({len(available)} columns, see docs/results-file.md)")
    if not [c for c in wanted if c != "run"]:
        raise UsageError("--columns: give at least one /tasks column name")
    return [c for c in wanted if c != "run"]


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def jsonable(v):
    """A value JSON can hold: numpy values as plain ones, NaN and inf as None."""
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return None if isinstance(v, float) and not math.isfinite(v) else v


def csv_field(v):
    if missing(v):
        return ""
    return ("true" if v else "false") if isinstance(v, bool) else v


def write_csv(table: Table, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(table)
        writer.writerows([csv_field(v) for v in row] for row in zip(*table.values()))


def write_jsonl(table: Table, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in zip(*table.values()):
            fh.write(json.dumps(dict(zip(table, map(jsonable, row))), ensure_ascii=False, allow_nan=False) + "\n")


def write_parquet(table: Table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def array(values: list):
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column whose type changed between schema versions
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())

    pq.write_table(pa.table({name: array(values) for name, values in table.items()}), path)


WRITERS: dict[str, Callable[[Table, Path], None]] = {"csv": write_csv, "parquet": write_parquet,
                                                     "jsonl": write_jsonl}


def write_attrs(attrs: dict[str, dict], path: Path) -> None:
    text = json.dumps({run: {k: jsonable(v) for k, v in a.items()} for run, a in attrs.items()},
                      indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_all(files: dict[Path, Callable[[Path], None]]) -> None:
    """Each file written under a temporary name beside it, then all renamed into place: a failure while
    writing leaves every final name as it was, and no half-written file under it."""
    temporary: dict[Path, Path] = {}
    try:
        for path, write in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary[path] = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            write(temporary[path])
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    except OSError as err:
        raise UsageError(f"--out: writing {str(path)!r} failed ({err.strerror or err})") from None
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.format == "parquet" and not parquet_available():
        raise UsageError(NEEDS_PYARROW)
    paths = outputs(Path(ns.out))
    check_outputs(list(paths.values()), ns.runs, ns.overwrite)
    tasks = [(r, read_tasks(r)) for r in ns.runs]  # every input is read (and refused) before a byte is written
    hosts = [(r, read_hosts(r)) for r in ns.runs]
    attrs = {r: read_attrs(r) for r in ns.runs}
    available = union([t for _, t in tasks], [c.name for c in TASK_COLUMNS])
    columns = chosen_columns(ns.columns, available, several=len(ns.runs) > 1)
    write = WRITERS[ns.format]
    task_table = combine(tasks, columns)
    host_table = combine(hosts, union([h for _, h in hosts], [c.name for c in HOST_COLUMNS]))
    write_all({paths["tasks"]: lambda p: write(task_table, p), paths["hosts"]: lambda p: write(host_table, p),
               paths["attrs"]: lambda p: write_attrs(attrs, p)})
    rows = len(next(iter(task_table.values()), []))
    print(f"wrote {rows} task rows to {paths['tasks']}, hosts to {paths['hosts']}, attributes to {paths['attrs']}")
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
