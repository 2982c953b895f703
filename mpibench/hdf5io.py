"""HDF5 below h5py, for the results file: checks and settings h5py does not offer.

- A file's layout is checked before HDF5 reads it: its signature, its superblock's checksum, and whether
  the file is shorter than the superblock says (truncated). A reader of a live file (swmr=True) skips
  HDF5's own truncation check and would retry reading missing metadata for hours.
- Readers open with HDF5's metadata read attempts bounded (H5Pset_metadata_read_attempts, which h5py
  does not wrap), so a damaged file is refused in well under a second.
- The writer reserves a commit's disk blocks before HDF5 writes (fallocate), so a full disk is found
  before HDF5 fails halfway, which can leave it unable to close the file.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
import time
from pathlib import Path

import h5py

from mpibench.errors import UsageError


def allocate_ahead(fd: int, offset: int, length: int) -> bool:
    """Allocate file blocks beyond the end without changing the file's size (Linux fallocate with
    FALLOC_FL_KEEP_SIZE). True when the disk has no room for them; False when done, or when the
    platform or file system cannot allocate ahead (the free-space check then has to do)."""
    global _fallocate
    if _fallocate is None:
        try:
            _fallocate = ctypes.CDLL(None, use_errno=True).fallocate
            _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        except (AttributeError, OSError):
            _fallocate = False
    if not _fallocate or _fallocate(fd, 1, offset, length) == 0:  # 1: FALLOC_FL_KEEP_SIZE
        return False
    return ctypes.get_errno() in (errno.ENOSPC, errno.EDQUOT)


_fallocate = None


#: How often HDF5 reads one piece of metadata before it gives up. A reader of a live file retries a read
#: that met a half-written piece, sleeping 1 ns, 2 ns, 4 ns, ... in between: 28 tries sleep 0.27 s in all.
#: HDF5's default for such readers (100 tries) sleeps for hours over a damaged file.
METADATA_READ_ATTEMPTS = 28
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_WRITING = 0x01 | 0x04  # superblock v2/v3 status flags: open for writing, for SWMR writing


def check_layout(p: Path) -> None:
    """Refuse, before HDF5 reads it, a file without HDF5's signature or shorter than its superblock says.

    A reader of a live file (swmr=True) skips HDF5's own truncation check, and would retry reading the
    missing metadata for hours. A live writer may be rewriting the superblock this instant: look again.
    """
    for _ in range(5):
        with open(p, "rb") as fh:
            head, size = fh.read(256), os.fstat(fh.fileno()).st_size
        problem = _layout_problem(head, size)
        if problem is None:
            return
        if not head.startswith(_SIGNATURE):
            break
        time.sleep(0.05)
    raise UsageError(f"{str(p)!r} {problem}")


def _layout_problem(head: bytes, size: int) -> str | None:
    """What is wrong with a file that starts with `head` and has `size` bytes; None: nothing seen."""
    if not head.startswith(_SIGNATURE):
        return "is not an HDF5 file (" + ("it is empty)" if not size else "no HDF5 signature at its start)")
    too_short = f"is truncated: {size} bytes, too short for an HDF5 superblock"
    if len(head) < 16:
        return too_short
    version = head[8]
    if version in (0, 1):  # the layout h5py writes by default (never mpibench's writer)
        width, at, flags, checked = head[13], 24 + 4 * version, 0, 0
    elif version in (2, 3):  # libver="latest": signature, version, sizes, flags, then addresses
        width, at, flags = head[9], 12, head[11]
        checked = at + 4 * width
    else:  # a layout newer than this reader: HDF5 decides
        return None
    if len(head) < max(at + 3 * width, checked + 4):
        return too_short if len(head) == size else "is damaged: its HDF5 superblock is malformed"
    if checked and lookup3(head[:checked]) != int.from_bytes(head[checked:checked + 4], "little"):
        return "is damaged: its HDF5 superblock fails its checksum"
    base, end = (int.from_bytes(head[at + k * width:at + (k + 1) * width], "little") for k in (0, 2))
    short = base + end - size
    if short > 0 and not flags & _WRITING:  # a live or killed writer may have reserved space it never filled
        return (f"is truncated: {size} bytes where its HDF5 superblock records {base + end} (an interrupted "
                f"copy or a full disk?)")
    return None


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 hash (hashlittle), HDF5's checksum of its superblock and metadata."""
    m = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    v = [(0xDEADBEEF + len(data) + initval) & m] * 3  # a, b, c
    tail = len(data) - (len(data) - 1) // 12 * 12 if data else 0  # the last 1-12 bytes
    for i in range(0, len(data) - tail, 12):
        v = [(x + y) & m for x, y in zip(v, struct.unpack_from("<3I", data, i))]
        for k, s in enumerate((4, 6, 8, 16, 19, 4)):  # mix(a, b, c)
            x, y, z = k % 3, (k + 1) % 3, (k + 2) % 3
            v[x] = ((v[x] - v[z]) & m) ^ rot(v[z], s)
            v[z] = (v[z] + v[y]) & m
    if not tail:
        return v[2]
    v = [(x + y) & m for x, y in zip(v, struct.unpack("<3I", data[-tail:].ljust(12, b"\0")))]
    for k, s in enumerate((14, 11, 25, 16, 4, 14, 24)):  # final(a, b, c)
        x, y = (k + 2) % 3, (k + 1) % 3
        v[x] = ((v[x] ^ v[y]) - rot(v[y], s)) & m
    return v[2]


def open_swmr(p: Path) -> h5py.File:
    """h5py.File(p, "r", swmr=True, libver="latest"), with HDF5's metadata read attempts bounded."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    limit = _read_attempts_setter()
    if limit is not None:
        with h5py._objects.phil:  # h5py's lock around every call into HDF5
            limit(fapl.id, METADATA_READ_ATTEMPTS)
    fid = h5py.h5f.open(os.fsencode(p), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


@functools.lru_cache(maxsize=1)
def _read_attempts_setter():
    """H5Pset_metadata_read_attempts of the libhdf5 h5py runs on (h5py does not wrap it); None if not found."""
    candidates = []
    try:
        with open("/proc/self/maps") as fh:  # Linux: the library this process really loaded
            candidates += [line.split()[-1] for line in fh if "/libhdf5" in line]
    except OSError:
        pass
    here = Path(h5py.__file__).parent
    candidates += [str(c) for d in (here.parent / "h5py.libs", here / ".dylibs") for c in sorted(d.glob("libhdf5*"))]
    for c in dict.fromkeys(candidates):
        if Path(c).name.startswith("libhdf5_"):  # libhdf5_hl, ...
            continue
        try:
            lib = ctypes.CDLL(c)
            major, minor, patch = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
            lib.H5get_libversion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
            if (major.value, minor.value, patch.value) != h5py.version.hdf5_version_tuple[:3]:
                continue
            setter = lib.H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
        return setter
    return None
