"""`python -m mpibench.recover RUN.h5`: rebuild a clean file from one whose writer was killed.

The writer runs in SWMR mode, so everything it flushed is readable after a SIGKILL; but HDF5 then
refuses to open the file for writing again. This copies every attribute, host, task row and raw
sample into a fresh file and replaces the old one atomically. `--resume` does it by itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import h5py

from mpibench.claim import WriterClaim
from mpibench.cli import Parser, main_guard
from mpibench.errors import UsageError
from mpibench.store import DAMAGE, reading


def recover(path: str | Path) -> Path:
    """Rebuild `path` in place. A file that is damaged or not mpibench's, or a directory that cannot take
    the rebuilt copy, is a UsageError (one line), and the file is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.recover.tmp")
    try:
        with reading(path) as src:  # refuses what is not ours or is damaged before anything is written
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise UsageError(f"cannot recover {str(path)!r}: its directory is read-only, and the rebuilt "
                                 "copy is written beside it; copy the file somewhere writable and recover it there")
            try:
                with h5py.File(tmp, "w", libver="latest") as dst:
                    _copy(src, dst)
            except DAMAGE as err:
                code = _write_errno(err)
                why = (f"writing its rebuilt copy {tmp.name} failed ({os.strerror(code)})" if code else
                       f"it is damaged ({_one_line(err)})")
                raise UsageError(f"cannot recover {str(path)!r}: {why}; the file is left as it was") from None
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise UsageError(f"cannot recover {str(path)!r}: replacing it failed ({_one_line(err)}); "
                             "the file is left as it was") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone already when the file was replaced
    return path


def _copy(src: h5py.File, dst: h5py.File) -> None:
    """Every attribute, group and dataset of `src`, each table cut to whole rows and /raw to what they use."""
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


def _write_errno(err: BaseException) -> int | None:
    """The system error of a failed write (a full disk), as h5py or HDF5's message gives it; None: none."""
    found = re.search(r"write failed.*?errno = (\d+)", str(err), re.S)
    return getattr(err, "errno", None) or (int(found.group(1)) if found else None)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _trim(group: h5py.Group) -> None:
    """Cut every column of a table to the shortest: only whole rows are kept."""
    n = min((ds.shape[0] for ds in group.values()), default=0)
    for ds in group.values():
        ds.resize((n,))


def _main(argv=None) -> int:
    p = Parser(prog="python -m mpibench.recover", description=__doc__.splitlines()[0])
    p.add_argument("file", help="the run file to rebuild in place")
    ns = p.parse_args(argv)
    if not Path(ns.file).is_file():
        raise UsageError(f"recover: {ns.file!r}: no such file")
    with WriterClaim.acquire(Path(ns.file), "recover"):  # never under a live writer; a dead one's is taken over
        recover(ns.file)
    print(f"recovered {ns.file}")
    return 0


main = main_guard(_main)

if __name__ == "__main__":
    sys.exit(main())
