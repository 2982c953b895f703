"""Stop requests: SIGTERM, SIGUSR1 (Slurm's warning before a time limit) and SIGINT set a flag.

Nothing is torn down in the handler itself; the coordinator and the Runner check the flag at safe
points (between polls, between iterations), so the file is always closed by ordinary code.
"""

from __future__ import annotations

import signal
import time
from typing import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopFlag:
    def __init__(self):
        self.signal: str | None = None

    def install(self) -> "StopFlag":
        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def request(self, why: str) -> None:
        """A stop asked for by other means than a signal to this process (a worker that got one)."""
        self.signal = self.signal or why

    @property
    def urgent(self) -> bool:
        """SIGTERM means the launcher will kill us in moments: do not wait for in-flight tasks."""
        return (self.signal or "").startswith("SIGTERM")

    def __call__(self) -> str | None:
        """The reason to stop (the signal's name), or None."""
        return self.signal


def sleep_unless(stop: Callable[[], object], seconds: float, step_s: float = 0.1) -> None:
    """Sleep `seconds`, or less once `stop()` says so (looked at every `step_s`)."""
    end = time.monotonic() + seconds
    while not stop() and (left := end - time.monotonic()) > 0:
        time.sleep(min(step_s, left))
