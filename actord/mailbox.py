"""A bounded mailbox with a control lane. Only `channel.py` touches one.

Data messages wait in a bounded deque: a sender blocks while it is full (backpressure). Control
messages go to a separate, unbounded lane that `take` serves first, so a stop is never stuck
behind a full data lane. Receivers take batches: one lock round trip can move many messages.

Wake-ups are counted: a put notifies only when a receiver is really waiting, and a take only
when a sender is, so the uncontended path is one lock acquire, an append and a release.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .errors import MailboxClosed, MailboxFull
from .message import Message

_monotonic = time.monotonic


class Mailbox:
    """Bounded FIFO of `Message` plus a control lane. Safe for many senders and receivers."""

    __slots__ = (
        "_closed",
        "_control",
        "_data",
        "_lock",
        "_not_empty",
        "_not_full",
        "_receivers_waiting",
        "_senders_waiting",
        "capacity",
        "name",
    )

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        # _lock guards every field below; both conditions share it.
        self._lock = threading.Lock()
        self._data: deque[Message] = deque()
        self._control: deque[Message] = deque()
        self._closed = False
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        # Receivers / senders currently blocked in take / put: notify only when non-zero.
        self._receivers_waiting = 0
        self._senders_waiting = 0

    def __len__(self) -> int:
        """Data messages queued now (the control lane is not counted)."""
        return len(self._data)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, message: Message, timeout: float | None = None) -> None:
        """Append a data message, blocking while the mailbox is full.

        `timeout` None waits forever, 0 never waits. Raises `MailboxFull` when the timeout runs
        out and `MailboxClosed` when the mailbox is (or becomes) closed.
        """
        with self._lock:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            if len(self._data) >= self.capacity:
                self._wait_for_room(message, timeout)
            self._data.append(message)
            if self._receivers_waiting:
                self._not_empty.notify()

    def put_many(self, messages: list[Message], timeout: float | None = None) -> None:
        """Append several data messages in order, blocking for room as `put` does."""
        with self._lock:
            for message in messages:
                if self._closed:
                    raise MailboxClosed(f"mailbox {self.name!r} is closed")
                if len(self._data) >= self.capacity:
                    self._wait_for_room(message, timeout)
                self._data.append(message)
            if self._receivers_waiting:
                self._not_empty.notify(self._receivers_waiting)

    def _wait_for_room(self, message: Message, timeout: float | None) -> None:
        # Called with _lock held; returns with room available or raises.
        deadline = None if timeout is None else _monotonic() + timeout
        self._senders_waiting += 1
        try:
            while len(self._data) >= self.capacity:
                if self._closed:
                    raise MailboxClosed(f"mailbox {self.name!r} is closed")
                if deadline is None:
                    self._not_full.wait()
                    continue
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise MailboxFull(
                        f"mailbox {self.name!r} stayed full ({self.capacity}) for {timeout}s",
                        message,
                    )
                self._not_full.wait(remaining)
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
        finally:
            self._senders_waiting -= 1

    def put_control(self, message: Message) -> None:
        """Append to the control lane: never blocks, accepted even when closed."""
        with self._lock:
            self._control.append(message)
            if self._receivers_waiting:
                self._not_empty.notify_all()

    def requeue_front(self, messages: list[Message]) -> None:
        """Put messages a receiver took but did not handle back at the front, in order."""
        with self._lock:
            self._data.extendleft(reversed(messages))
            if self._receivers_waiting:
                self._not_empty.notify(self._receivers_waiting)

    def take(self, max_items: int = 1, timeout: float | None = None) -> list[Message]:
        """Remove and return up to `max_items` messages, control messages first.

        Blocks while both lanes are empty. Raises `TimeoutError` when `timeout` runs out and
        `MailboxClosed` once the mailbox is closed and its data lane is drained.
        """
        with self._lock:
            if not self._control and not self._data:
                self._wait_for_message(timeout)
            if self._control:
                return [self._control.popleft()]
            data = self._data
            if len(data) <= max_items:
                items = list(data)
                data.clear()
            else:
                popleft = data.popleft
                items = [popleft() for _ in range(max_items)]
            if self._senders_waiting:
                self._not_full.notify(len(items))
            return items

    def _wait_for_message(self, timeout: float | None) -> None:
        # Called with _lock held; returns with a message available or raises.
        deadline = None if timeout is None else _monotonic() + timeout
        self._receivers_waiting += 1
        try:
            while not self._control and not self._data:
                if self._closed:
                    raise MailboxClosed(f"mailbox {self.name!r} is closed and drained")
                if deadline is None:
                    self._not_empty.wait()
                    continue
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"mailbox {self.name!r} stayed empty for {timeout}s")
                self._not_empty.wait(remaining)
        finally:
            self._receivers_waiting -= 1

    def close(self) -> None:
        """Refuse new data and wake every blocked sender and receiver.

        Receivers still get what is queued; once it is drained, `take` raises `MailboxClosed`.
        """
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()

    def drain(self) -> list[Message]:
        """Remove and return every queued data message (control messages are discarded)."""
        with self._lock:
            items = list(self._data)
            self._data.clear()
            self._control.clear()
            if self._senders_waiting:
                self._not_full.notify_all()
            return items
