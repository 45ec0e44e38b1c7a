"""The daemon's main-loop queue, and the signals that feed it.

As gunicorn's arbiter does, a signal handler does nothing but hand the signal over; the main
loop acts on it. The hand-over is a wake-up pipe (`signal.set_wakeup_fd`): the C-level
handler writes the signal's number there, from whichever thread the kernel picked, so the
main loop, blocked in `select` on the pipe, wakes at once. (A Python-level handler alone
would run only when the main thread next runs bytecode: a main thread blocked in a lock
wait would not see a SIGTERM delivered to another thread until its wait timed out.)

`actord run` installs this first, before the heavy imports and the start, so a SIGTERM at
any moment of start-up is kept (the start is cut short, the daemon exits 0) instead of
Python's default "die now". Light on imports on purpose.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import time
from typing import Any, Final

__all__ = ["HANDLED", "STOPS", "SignalQueue"]

HANDLED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
_LOOK: Final = b"\0"  # not a signal number: "an event is in the queue"


class SignalQueue:
    """The main loop's events: signals (by number) and other threads' requests."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Signal numbers (one byte each, written by the C-level handler) and _LOOK bytes.
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, Any] = {}  # handlers `install` replaced (main thread only)
        self._previous_fd: int | None = None
        self.stop_requested = False  # a SIGTERM/SIGINT arrived (set by the Python handler)

    def install(self) -> SignalQueue:
        """Main thread: route SIGTERM, SIGINT and SIGHUP here (idempotent)."""
        if self._previous_fd is None:
            self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in HANDLED:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)
        return self

    def restore(self) -> None:
        """Main thread: put back what `install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None

    def _handle(self, signum: int, frame: object) -> None:
        # The signal itself reaches the loop through the wake-up pipe; this only notes it
        # for the start-up checks (and replaces the default action).
        if signum in STOPS:
            self.stop_requested = True

    def put(self, event: object) -> None:
        """Any thread: queue an event for the main loop and wake it."""
        self._events.put(event)
        # A full pipe holds wake-ups already: the loop is bound to look.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, _LOOK)

    def get(self, timeout: float) -> object:
        """Main thread: the next event (a signal number, or what `put` queued); raises
        `queue.Empty` after `timeout` seconds without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._events.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
            if select.select([self._read], [], [], remaining)[0]:
                self._drain_pipe()

    def _drain_pipe(self) -> None:
        try:
            data = os.read(self._read, 4096)
        except BlockingIOError:
            return
        for byte in data:
            if byte:  # a signal number, in the order the signals came
                self._events.put(byte)
