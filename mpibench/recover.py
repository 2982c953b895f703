"""`python -m mpibench.recover RUN.h5`: rebuild a clean file from one whose writer was killed.

The writer runs in SWMR mode, so everything it flushed is readable after a SIGKILL; but HDF5 then
refuses to open the file for writing again. This copies every attribute, host, task row and raw
sample into a fresh file and replaces the old one atomically. `--resume` does it by itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py

from mpibench.cli import Parser, main_guard
from mpibench.store import open_run


def recover(path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.recover.tmp")
    with open_run(path) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name, obj in src.items():
            src.copy(obj, dst, name=name)
        for name, group in dst.items():
            if name != "raw" and isinstance(group, h5py.Group):
                _trim(group)  # a kill mid-append may leave one column of any table longer
        tasks = dst["tasks"]
        end = int(tasks["raw_offset"][-1] + tasks["raw_count"][-1]) if tasks["task_id"].shape[0] else 0
        for ds in dst["raw"].values():
            ds.resize((end,))
    os.replace(tmp, path)
    return path


def _trim(group: h5py.Group) -> None:
    """Cut every column of a table to the shortest: only whole rows are kept."""
    n = min((ds.shape[0] for ds in group.values()), default=0)
    for ds in group.values():
        ds.resize((n,))


def _main(argv=None) -> int:
    p = Parser(prog="python -m mpibench.recover", description=__doc__.splitlines()[0])
    p.add_argument("file", help="the run file to rebuild in place")
    ns = p.parse_args(argv)
    recover(ns.file)
    print(f"recovered {ns.file}")
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
