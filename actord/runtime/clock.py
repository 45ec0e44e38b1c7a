"""The clock the supervisor reads and sleeps on, so that tests can replace it with a fake one."""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time plus an interruptible sleep."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        """Wait `seconds` or until `interrupt` is set; True if interrupted."""
        ...


class SystemClock:
    """The real clock: `time.monotonic` and `Event.wait`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        return interrupt.wait(seconds) if seconds > 0 else interrupt.is_set()
