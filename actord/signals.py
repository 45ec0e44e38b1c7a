"""The daemon's signals: handlers only put the signal on the main loop's queue.

As gunicorn's arbiter does, a handler does nothing but hand the signal over; the main loop
acts on it. `actord run` installs them first, before the heavy imports and the start, so a
SIGTERM at any moment of start-up is queued (the start is then cut short and the daemon
exits 0) instead of Python's default "die now". Light on imports on purpose.
"""

from __future__ import annotations

import queue
import signal
from typing import Any, Final

__all__ = ["HANDLED", "STOPS", "SignalQueue"]

HANDLED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPS: Final = frozenset({signal.SIGTERM, signal.SIGINT})


class SignalQueue:
    """The main loop's queue of events; signals are put there by their handlers.

    Other threads put their own requests on the same queue (a reload, a shutdown, an
    escalation): the main loop serves one event at a time, in order.
    """

    def __init__(self) -> None:
        # SimpleQueue.put is reentrant: safe to call from a signal handler.
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._previous: dict[int, Any] = {}  # what the handlers replaced (main thread only)
        self.stop_requested = False  # a SIGTERM/SIGINT arrived (set by the handler)

    def install(self) -> SignalQueue:
        """Main thread: route SIGTERM, SIGINT and SIGHUP to the queue (idempotent)."""
        for signum in HANDLED:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)
        return self

    def restore(self) -> None:
        """Main thread: put back what `install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if signum in STOPS:
            self.stop_requested = True
        self.events.put(signum)
