"""One writer per results file: a claim file beside it names the writer (host, pid, start time).

The claim `.RUN.h5.writer` is held with an exclusive `flock` for the writer's lifetime, so on one host
(and on cluster file systems with coherent locks) a live writer can never be displaced, and a dead
one's lock goes with its process. Where locks do not reach (another node over NFS), a heartbeat decides:
the writer refreshes the file's mtime every HEARTBEAT_S, and a claim older than STALE_S without one is
stale. A stale claim is taken over; a live one is refused with one line naming its writer.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from mpibench.errors import UsageError

HEARTBEAT_S = 10.0
STALE_S = 60.0
#: How long a claim waits for a locked claim file: a writer just killed can take a moment to let go.
DYING_S = 3.0


def claim_path(target: Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.writer")


def describe(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("start", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {started}"


class WriterClaim:
    """Held by the only process that may write `target`; `release()` (or its death) ends it."""

    def __init__(self, target: Path, fd: int, info: dict):
        self.target, self.path, self.fd, self.info = Path(target), claim_path(target), fd, info
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="mpibench-claim", daemon=True)
        self._beat.start()

    @classmethod
    def acquire(cls, target: Path, what: str = "--output") -> "WriterClaim":
        """Claim `target` for writing, taking over a stale claim; UsageError when it has a live writer."""
        path = claim_path(target)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f"{what}: cannot claim {str(target)!r} for writing ({err.strerror}: {path})") from None
        try:
            _lock(fd)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise UsageError(f"{what}: cannot lock {path} ({err.strerror})") from None
            raise UsageError(f"{what}: {str(target)!r} is being written by {describe(_read(path))}; "
                             "wait for that run to end or choose another file") from None
        holder = _read(path)
        if holder and _alive_elsewhere(holder, path):
            os.close(fd)  # closing drops the lock
            raise UsageError(f"{what}: {str(target)!r} is being written by {describe(holder)} (its heartbeat "
                             f"is {time.time() - path.stat().st_mtime:.0f} s old); wait for that run to end, "
                             f"or after {STALE_S:.0f} s without a heartbeat the claim is taken over")
        info = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(target, fd, info)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.fd)
            except OSError:
                pass  # a full or vanished file system: the writer will find out when it writes

    def release(self) -> None:
        """Remove the claim (while still holding the lock, so nobody takes a claim that is going)."""
        if self.fd < 0:
            return
        self._stop.set()
        try:
            if _read(self.path).get("pid") == self.info["pid"]:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "WriterClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(fd: int) -> None:
    """The exclusive lock, waiting up to DYING_S for a holder that is being killed to let go."""
    deadline = time.monotonic() + DYING_S
    while True:
        try:
            return fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive_elsewhere(holder: dict, path: Path) -> bool:
    """The lock was free: the holder is dead, unless it runs on another host that locks do not reach
    and its heartbeat is fresh."""
    if holder.get("host") == socket.gethostname():
        return False  # on this host a live holder would still hold the lock
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except OSError:
        return False
