"""A bounded mailbox with a control lane. Only `channel.py` touches one.

Data messages wait in a bounded deque: a sender blocks while it is full (backpressure). Control
messages go to a separate, unbounded lane that `take` serves first, so a stop is never stuck
behind a full data lane. Receivers take batches: one lock round trip can move many messages.

Wake-ups are exact: a put wakes a receiver only when one is blocked and not yet woken, and a
take wakes senders the same way. `threading.Condition` cannot tell "blocked" from "woken but
not yet running", which makes every put during that window pay for a useless notify;
`_WaitQueue` removes a waiter as it wakes it.

The common put takes no lock: when there is room and no sender waits for it, it appends to
the data deque (append and popleft are atomic) and takes the lock only to wake a blocked
receiver. Three rules keep that safe (under the GIL, whose switches order these steps):
- a receiver registers as waiting and then checks the deque again before it blocks, so a
  put's append is either seen by that check or followed by the put seeing the waiter;
- whoever removes data does it item by item (popleft), never copy-then-clear, so an append
  made meanwhile is never cleared unseen;
- a put checks `_closed` again after its append: if the mailbox was drained for good in
  between, it takes its message back under the lock and raises `MailboxClosed`.
Profiled in bench/channel.py, the lock round trip was the costliest step of a send: a sender
that lost the GIL while holding it made the receiver block on it, and the other way round.
A put racing others past the room check may go over `capacity` by one message per racing
sender (a switch between the check and the append): the bound stays a bound.

A stop reaches an actor blocked here: each wait arms the thread's `StopToken` (see
`interrupt.py`) with a wake-up that removes just that waiter, and the wait ends with
`ActorStopping`. A control message may name one member of a pool: only that member takes it;
so may a data message (an operator's command to `pool#i`), bounded by the mailbox's capacity.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from . import interrupt
from .errors import MailboxClosed, MailboxFull
from .interrupt import StopToken
from .message import Message, MessageType

_monotonic = time.monotonic
_allocate_lock = _thread.allocate_lock


class Wakeable(Protocol):
    """A waiter of a `_WaitQueue`: a locked lock a thread blocks on, or an asyncio waiter
    (see `aio.py`) whose `release` completes a future on its loop. Called once, with the
    mailbox lock held: it must not block."""

    def release(self) -> None: ...


class _WaitQueue(deque[Wakeable]):
    """Threads (and asyncio tasks) blocked on one condition of a mailbox, woken one at a time
    in FIFO order.

    Each entry is a locked lock its thread blocks on, or an asyncio waiter. A deque subclass
    so that "is anyone waiting?" is a C-level truth test. Used with the mailbox lock held, as
    a Condition is.
    """

    __slots__ = ()

    def wait(
        self,
        lock: _thread.LockType,
        timeout: float | None,
        token: StopToken | None,
        ready: Callable[[], object] | None = None,
    ) -> bool:
        """Release `lock`, block until notified, interrupted or `timeout`, re-acquire; True
        if woken (by a notify or by the token's trip: the caller checks `token.stopping`).
        `ready` is checked once registered and before blocking: True returns at once (what
        a sender appended without the lock, after the caller's own check)."""
        waiter = _allocate_lock()
        waiter.acquire()
        self.append(waiter)
        if ready is not None and ready():
            self.remove(waiter)
            return True
        if token is not None:
            try:
                token.arm(lambda: self._interrupt(lock, waiter))
            except BaseException:
                self.remove(waiter)
                raise
        lock.release()
        notified = False
        try:
            notified = waiter.acquire() if timeout is None else waiter.acquire(True, timeout)
        finally:
            lock.acquire()
            if token is not None:
                token.disarm()
            if not notified:
                try:
                    self.remove(waiter)
                except ValueError:
                    notified = True  # woken just as the wait timed out: the wake-up is ours
        return notified

    def _interrupt(self, lock: _thread.LockType, waiter: _thread.LockType) -> None:
        # The stopping thread: wake this one waiter, if it is still waiting. Removing it first
        # means no notify is ever spent on a thread that is about to leave.
        with lock:
            try:
                self.remove(waiter)
            except ValueError:
                return  # already woken by a notify
            waiter.release()

    def notify(self, n: int = 1) -> None:
        while self and n > 0:
            self.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        self.notify(len(self))


class Mailbox:
    """Bounded FIFO of `Message` plus a control lane. Safe for many senders and receivers."""

    __slots__ = (
        "_closed",
        "_control",
        "_data",
        "_gone",
        "_left",
        "_lock",
        "_not_empty",
        "_not_full",
        "_targeted",
        "capacity",
        "name",
    )

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        # _lock guards every field below; both wait queues are used with it held.
        self._lock = threading.Lock()
        self._data: deque[Message] = deque()
        self._control: deque[Message] = deque()  # for whichever receiver comes first
        self._targeted: dict[str, deque[Message]] = {}  # per member; no empty deque is kept
        # Members whose thread has exited: nothing may wait for them any more (member names
        # are never reused, so this holds a few names per pool resize).
        self._left: set[str] = set()
        self._closed = False
        self._gone = False  # drained for good: nothing may be put back
        self._not_empty = _WaitQueue()  # receivers blocked in take
        self._not_full = _WaitQueue()  # senders blocked in put

    def __len__(self) -> int:
        """Data messages queued now (the control lane is not counted)."""
        return len(self._data)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def gone(self) -> bool:
        """Drained for good (see `drain`): nothing is queued and nothing can be put back."""
        return self._gone

    def put(self, message: Message, timeout: float | None = None) -> None:
        """Append a data message, blocking while the mailbox is full.

        `timeout` None waits forever, 0 never waits. Raises `MailboxFull` when the timeout runs
        out, `MailboxClosed` when the mailbox is (or becomes) closed, and `ActorStopping` when
        the calling actor is stopped while it waits.
        """
        data = self._data
        if len(data) < self.capacity and not self._not_full and not self._closed:
            data.append(message)  # the lock-free path (see the module's doc)
            if self._closed:
                self._closed_under(message)
            if self._not_empty:
                with self._lock:
                    if self._not_empty:
                        self._not_empty.notify()
            return
        with self._lock:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            if len(data) >= self.capacity:
                self._wait_for_room(message, timeout)
            data.append(message)
            if self._not_empty:
                self._not_empty.notify()

    def _closed_under(self, message: Message) -> None:
        # A lock-free put whose mailbox closed as it appended. Closed only: the message is
        # queued as if the put had come first; a receiver still draining takes it, or the
        # drain that follows every close (the actor's end) dead-letters it. Drained for good:
        # the drain took the message (its caller dead-letters it) or came before the append;
        # then the message is taken back here, and MailboxClosed makes the sender's caller
        # dead-letter it. Either way it is not left in a mailbox nobody reads.
        with self._lock:
            if not self._gone:
                return
            # By identity and by index, never deque.remove: that compares with ==, which
            # matches an equal message of another sender's (and runs the payload's __eq__,
            # which may raise). Under the lock only appends can happen meanwhile, at the end.
            data = self._data
            for index in range(len(data)):
                if data[index] is message:
                    del data[index]
                    raise MailboxClosed(f"mailbox {self.name!r} is closed")
            # Not there: the drain has it.

    def _wait_for_room(self, message: Message, timeout: float | None) -> None:
        # Called with _lock held; returns with room available or raises.
        deadline = None if timeout is None else _monotonic() + timeout
        token = interrupt.current()
        while len(self._data) >= self.capacity:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                raise MailboxFull(
                    f"mailbox {self.name!r} stayed full ({self.capacity}) for {timeout}s", message
                )
            self._not_full.wait(self._lock, remaining, token)
            if token is not None and token.stopping:
                if len(self._data) < self.capacity and self._not_full:
                    self._not_full.notify()  # a wake-up we may have taken: pass it on
                token.check()
        if self._closed:
            raise MailboxClosed(f"mailbox {self.name!r} is closed")
        if len(self._data) + 1 < self.capacity and self._not_full:
            self._not_full.notify()  # room for more: pass the wake-up on

    def put_control(self, message: Message, member: str | None = None) -> bool:
        """Append to the control lane: never blocks, accepted even when closed. With `member`,
        only the receiver that takes as that member gets it (a restart or a stop of one pool
        member); otherwise whichever receiver comes first. False (dropped) if that member
        has left already."""
        with self._lock:
            if member is None:
                self._control.append(message)
            elif member in self._left:
                return False
            else:
                self._targeted.setdefault(member, deque()).append(message)
            if self._not_empty:
                self._not_empty.notify_all()
            return True

    def put_member(self, message: Message, member: str) -> None:
        """Append a data message that only `member` takes, in its own lane (served before the
        shared ones, as its control messages are). Never blocks: raises `MailboxFull` at once
        while `capacity` messages already wait for that member, `MailboxClosed` once closed
        or once that member has left."""
        with self._lock:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            if member in self._left:
                raise MailboxClosed(f"{member!r} has stopped")
            lane = self._targeted.get(member)
            if lane is not None and len(lane) >= self.capacity:
                raise MailboxFull(
                    f"{member!r} already has {self.capacity} messages waiting for it", message
                )
            self._targeted.setdefault(member, deque()).append(message)
            if self._not_empty:
                self._not_empty.notify_all()

    def join(self, member: str) -> None:
        """`member` takes messages (again): a pool member started under the name of one that
        left (a pool that shrank, then grew)."""
        with self._lock:
            self._left.discard(member)

    def leave(self, member: str) -> list[Message]:
        """`member` will take nothing more (its thread is exiting): remove its own lane and
        return what in it must not vanish (data, and requests someone waits on); the other
        control messages, meant for a thread that is gone, are dropped."""
        with self._lock:
            self._left.add(member)
            lane = self._targeted.pop(member, None)
        return [] if lane is None else [m for m in lane if _kept(m)]

    def requeue_front(self, messages: list[Message]) -> bool:
        """Put messages a receiver took but did not handle back at the front, in order.

        False (nothing put back) once the mailbox has been drained for good: the caller
        dead-letters them, as the drain did with what was queued."""
        with self._lock:
            if self._gone:
                return False
            self._data.extendleft(reversed(messages))
            if self._not_empty:
                self._not_empty.notify_all()
            return True

    def take(
        self, max_items: int = 1, timeout: float | None = None, member: str | None = None
    ) -> list[Message]:
        """Remove and return up to `max_items` messages: one of `member`'s own first (a
        control message, or a command for that member alone), then control messages for
        anyone, then data.

        Blocks while both lanes are empty. Raises `TimeoutError` when `timeout` runs out,
        `MailboxClosed` once the mailbox is closed and its data lane is drained, and
        `ActorStopping` when the calling actor is stopped while it waits.
        """
        with self._lock:
            if self._targeted and member in self._targeted:
                return [self._own_control(member)]
            if not self._control and not self._data:
                self._wait_for_message(timeout, member)
                if self._targeted and member in self._targeted:
                    return [self._own_control(member)]
            if self._control:
                return [self._control.popleft()]
            # Item by item, never list() then clear(): a lock-free put may append meanwhile.
            popleft = self._data.popleft
            items = [popleft() for _ in range(min(len(self._data), max_items))]
            if self._not_full:
                self._not_full.notify(len(items))
            return items

    def _own_control(self, member: str | None) -> Message:
        # Called with _lock held and a message waiting for `member`.
        assert member is not None
        lane = self._targeted[member]
        message = lane.popleft()
        if not lane:
            del self._targeted[member]
        return message

    def _wait_for_message(self, timeout: float | None, member: str | None) -> None:
        # Called with _lock held; returns with a message for this receiver available, or raises.
        deadline = None if timeout is None else _monotonic() + timeout
        token = interrupt.current()
        while not self._control and not self._data:
            if self._targeted and member in self._targeted:
                return
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed and drained")
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"mailbox {self.name!r} stayed empty for {timeout}s")
            self._not_empty.wait(self._lock, remaining, token, self.__len__)
            if token is not None and token.stopping:
                if (self._control or self._data) and self._not_empty:
                    self._not_empty.notify()  # a wake-up we may have taken: pass it on
                token.check()

    # -- asyncio waiters: registered here, woken by the same notifies as blocked threads ---

    def poll(self, max_items: int = 1, member: str | None = None) -> list[Message]:
        """`take` without waiting: [] when nothing is there for this receiver now. Raises
        `MailboxClosed` once the mailbox is closed and its data lane is drained."""
        with self._lock:
            if self._targeted and member in self._targeted:
                return [self._own_control(member)]
            if self._control:
                return [self._control.popleft()]
            data = self._data
            if data:
                popleft = data.popleft  # item by item (see take)
                items = [popleft() for _ in range(min(len(data), max_items))]
                if self._not_full:
                    self._not_full.notify(len(items))
                return items
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed and drained")
            return []

    def wait_message(self, waiter: Wakeable, member: str | None = None) -> bool:
        """Register `waiter` as a receiver waiting for a message: True if registered (its
        `release` is called once when one may be there, or the mailbox closes); False if
        there is something to `poll` now (or the mailbox is closed): poll again at once."""
        with self._lock:
            if (
                self._closed
                or self._control
                or self._data
                or (self._targeted and member in self._targeted)
            ):
                return False
            self._not_empty.append(waiter)
            return True

    def wait_room(self, waiter: Wakeable) -> bool:
        """Register `waiter` as a sender waiting for room: True if registered (its `release`
        is called once when room may be there, or the mailbox closes); False if there is
        room now (or the mailbox is closed): put again at once."""
        with self._lock:
            if self._closed or len(self._data) < self.capacity:
                return False
            self._not_full.append(waiter)
            return True

    def cancel_wait(self, waiter: Wakeable) -> None:
        """An asyncio waiter gives up (cancelled, timed out): removed if still waiting; if
        it was woken already, its wake-up goes to the next waiter, never lost."""
        with self._lock:
            for queue in (self._not_full, self._not_empty):
                try:
                    queue.remove(waiter)  # by identity: a waiter has no __eq__
                except ValueError:
                    continue
                return
            if len(self._data) < self.capacity and self._not_full:
                self._not_full.notify()
            if (self._control or self._data) and self._not_empty:
                self._not_empty.notify()

    def close(self) -> None:
        """Refuse new data and wake every blocked sender and receiver.

        Receivers still get what is queued; once it is drained, `take` raises `MailboxClosed`.
        """
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()

    def drain(self) -> list[Message]:
        """Close for good: remove and return every queued data message (a member's own too)
        and every control request that someone waits on (a ping); other control messages are
        discarded. What a receiver tries to put back afterwards is refused (see
        `requeue_front`)."""
        with self._lock:
            self._closed = self._gone = True
            lanes = [self._control, *self._targeted.values()]
            items = [m for lane in lanes for m in lane if _kept(m)]
            data = self._data
            while data:  # item by item: a lock-free put may append meanwhile (see put)
                items.append(data.popleft())
            self._control.clear()
            self._targeted.clear()
            self._not_full.notify_all()
            self._not_empty.notify_all()
            return items


def _kept(message: Message) -> bool:
    # A control message nobody waits on (a stop, a restart) means nothing once its receiver
    # is gone; anything else becomes a dead letter, never lost silently.
    return message.correlation_id is not None or message.type is not MessageType.CONTROL
