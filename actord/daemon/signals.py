"""The daemon's main-loop queue, and the signals that feed it.

As gunicorn's arbiter does, a signal handler does nothing but hand the signal over; the main
loop acts on it. The hand-over is a wake-up pipe (`signal.set_wakeup_fd`): the C-level
handler writes the signal's number there, from whichever thread the kernel picked, so the
main loop, blocked in `select` on the pipe, wakes at once. (A Python-level handler alone
would run only when the main thread next runs bytecode: a main thread blocked in a lock
wait would not see a SIGTERM delivered to another thread until its wait timed out.)

`actord run` installs this first, before the heavy imports and the start, so a SIGTERM at
any moment of start-up is kept instead of Python's default "die now". While nothing is
started yet (arguments, imports, the config) and while the start only waits (for its actors
to answer), the queue is *interrupting*: the handler raises `StartInterrupted` wherever the
main thread is, an import included, so the start ends at once. Around the steps that start
things (spawning threads, binding sockets) it only queues, and the start checks
`stop_requested` between them. Light on imports on purpose.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import time
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["HANDLED", "STOPS", "SignalQueue", "StartInterrupted"]

HANDLED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOPS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
_LOOK: Final = b"\0"  # not a signal number: "an event is in the queue"


class StartInterrupted(BaseException):
    """Raised by the handler of a SIGTERM/SIGINT while the queue is interrupting: the start
    ends where it is. A BaseException, so that no ``except Exception`` on the way (an
    import's, a library's) takes it for an error of its own."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalQueue:
    """The main loop's events: signals (by number) and other threads' requests."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Signal numbers (one byte each, written by the C-level handler) and _LOOK bytes.
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, Any] = {}  # handlers `install` replaced (main thread only)
        self._previous_fd: int | None = None
        self.stop_requested = False  # a SIGTERM/SIGINT arrived (set by the Python handler)
        # Main thread only (the Python-level handler runs there too): a stop raises
        # StartInterrupted instead of only being queued.
        self.interrupting = False

    def install(self, *, interrupting: bool = False) -> SignalQueue:
        """Main thread: route SIGTERM, SIGINT and SIGHUP here (idempotent); `interrupting`:
        a stop raises `StartInterrupted` from now until `interrupting` is turned off."""
        if interrupting:
            self.interrupting = True
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

    @contextlib.contextmanager
    def interrupted(self) -> Iterator[None]:
        """Main thread: a stop raises `StartInterrupted` inside the block (at once if one
        came before it): for the steps of a start that only wait or start nothing."""
        self.interrupting = True
        try:
            if self.stop_requested:
                self.interrupting = False
                raise StartInterrupted(signal.SIGTERM)
            yield
        finally:
            self.interrupting = False

    def _handle(self, signum: int, frame: object) -> None:
        # The signal itself reaches the loop through the wake-up pipe; this notes it for the
        # start-up checks (and replaces the default action), and raises while interrupting.
        if signum in STOPS:
            self.stop_requested = True
            if self.interrupting:
                self.interrupting = False  # once: the cleanup it starts is not interrupted
                raise StartInterrupted(signum)

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
