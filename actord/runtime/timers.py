"""One timer thread for the whole system: a heap of deadlines served by a single thread.

Actors schedule messages to themselves (or others) once or repeatedly; requests with a timeout
schedule their own expiry. Each timer is a heap entry, not a sleeping thread. Cancelling marks
the entry; the thread discards cancelled entries when they reach the top of the heap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from .errors import ChannelClosed, InvalidArgument

_log: Final = logging.getLogger("actord.timers")


class Timer:
    """A handle on a scheduled callback. `cancel()` is safe from any thread, any number of times."""

    __slots__ = ("_cancelled", "callback", "deadline", "interval")

    def __init__(self, deadline: float, interval: float | None, callback: Callable[[], None]):
        self.deadline = deadline
        self.interval = interval
        self.callback = callback
        self._cancelled = False

    def cancel(self) -> None:
        """Stop the timer; a callback already running finishes, no further one starts."""
        self._cancelled = True

    @property
    def active(self) -> bool:
        return not self._cancelled


class TimerService:
    """Runs callbacks at monotonic deadlines on one named, non-daemon thread.

    Callbacks run on the timer thread and must be short and must not block: the runtime's own
    callbacks send with `timeout=0` or resolve a future.
    """

    def __init__(self, name: str = "actord-timers", clock: Callable[[], float] = time.monotonic):
        self._name = name
        self._clock = clock
        # _cond guards _heap, _thread and _closed; the thread waits on it for the next deadline.
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()  # tie-breaker: equal deadlines fire in scheduling order
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(
        self, delay: float, callback: Callable[[], None], interval: float | None = None
    ) -> Timer:
        """Run `callback` after `delay` seconds, then every `interval` seconds if given."""
        if delay < 0:
            raise InvalidArgument(f"timer delay must be >= 0, got {delay}")
        if interval is not None and interval <= 0:
            raise InvalidArgument(f"timer interval must be > 0, got {interval}")
        timer = Timer(self._clock() + delay, interval, callback)
        with self._cond:
            if self._closed:
                raise ChannelClosed("the timer service is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=False)
                self._thread.start()
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
            if self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def pending(self) -> int:
        """Timers scheduled and not yet cancelled (cancelled ones may linger until due)."""
        with self._cond:
            return sum(1 for _, _, t in self._heap if t.active)

    def close(self, timeout: float | None = 5.0) -> None:
        """Cancel every timer and join the thread."""
        with self._cond:
            self._closed = True
            for _, _, timer in self._heap:
                timer.cancel()
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _next_due(self) -> Timer | None:
        # Timer thread: wait for the earliest live deadline; None once closed.
        with self._cond:
            while not self._closed:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - self._clock()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, timer = heapq.heappop(self._heap)
                if timer.interval is not None:
                    # Fixed rate; a tick missed by far is skipped rather than fired in a burst.
                    timer.deadline = max(timer.deadline + timer.interval, self._clock())
                    heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
                return timer
            return None

    def _run(self) -> None:
        # The failure boundary for callbacks, as the receive loop is for handlers: one callback
        # that raises is logged with its traceback and cancelled; every other timer keeps going.
        while (timer := self._next_due()) is not None:
            if not timer.active:
                continue
            if timer.interval is None:
                timer.cancel()  # a one-shot is done once it runs: `active` says so
            try:
                timer.callback()
            except Exception:
                _log.exception("timer callback %r raised; the timer is cancelled", timer.callback)
                timer.cancel()
