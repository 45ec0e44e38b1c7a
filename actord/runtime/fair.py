"""A fair mailbox for pools: one FIFO per key, served in turn. Only `channel.py` makes one.

A plain pool mailbox is one FIFO: whoever is free takes the oldest message, so a sender that
queues many slow messages holds every member while the others' messages wait. A fair mailbox
keeps one FIFO per *key* (a message's payload says its key through a `fair_key` attribute:
see `FairKeyed`; a payload without one goes under the key None) and knows which key each
member holds (the key of the message it took last, until it takes again or leaves). A free
member takes the next message of the waiting key that holds the fewest members, the key
served longest ago first among equals. So:

- a key alone uses every member;
- while other keys wait, no key is given a member beyond the others' holdings: two keys with
  work on a pool of 2 hold one member each, whatever their messages cost;
- among keys that hold as many members, they take turns (round robin): between two messages
  of a waiting key, each other key is served at most once.

A member that took a key's message while that key was alone may hold it long (a slow message)
after another key's messages arrive. `yield_turn` lets it give the member back: when its key
holds more than one member beyond a waiting key (and no receiver is idle), the message goes
back to the front of its key's FIFO and the member is free for the waiting key. Handlers of
long, restartable work call it now and then (`Actor.yield_turn`).

Capacity bounds each key's FIFO (a sender blocks while its own key's FIFO is full), so a key
that fills its FIFO never keeps another key out; the messages queued in all are bounded by
`capacity` times the number of keys at once. The runtime knows nothing of what a key means.

Everything happens under the lock (no lock-free put as in `Mailbox`): a fair pool's messages
are units of work, each worth far more than a lock round trip. The control lane and a
member's own lane are the base class's, served first as there.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from . import interrupt
from .errors import MailboxClosed, MailboxFull
from .mailbox import Mailbox, Wakeable
from .message import Message

__all__ = ["FairKeyed", "FairMailbox", "FairShare", "fair_key"]

_monotonic: Final = time.monotonic
_NOTHING: Final = object()  # "holds no key" (None is a key)


@runtime_checkable
class FairKeyed(Protocol):
    """A payload that says whose turn it takes in a fair pool (a job's id, a tenant's name)."""

    @property
    def fair_key(self) -> Hashable: ...


@dataclass(frozen=True, slots=True)
class FairShare:
    """A fair mailbox's figures at one moment (for statistics and operators)."""

    held: Mapping[Hashable, int]  # members holding each key (keys holding none left out)
    waiting: frozenset[Hashable]  # keys with messages queued
    yields: int  # messages given back by `yield_turn` since the mailbox was made

    @property
    def busy(self) -> int:
        """Members holding a key (busy with a message, or just done with it)."""
        return sum(self.held.values())

    @property
    def keys(self) -> int:
        """Keys sharing the pool: holding a member or waiting for one."""
        return len(self.waiting.union(self.held))


def fair_key(message: Message) -> Hashable:
    """The key `message` is queued under in a fair mailbox: its payload's `fair_key`, or
    None for a payload without one (all such messages share one turn)."""
    return getattr(message.payload, "fair_key", None)


class FairMailbox(Mailbox):
    """A `Mailbox` whose data lane is one bounded FIFO per key, served in turn (see above)."""

    __slots__ = ("_count", "_held", "_holder", "_last", "_queues", "_served", "yields")

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity)
        # All guarded by the base class's _lock, as its fields (its _data deque stays empty).
        # The waiting messages by key, none empty (in the order the keys began to wait).
        self._queues: dict[Hashable, deque[Message]] = {}
        self._count = 0  # messages in _queues
        # When each key waiting or held was last served (a serial number of takes): a key
        # not in it was never served, or holds nothing and waited for nothing since.
        self._last: dict[Hashable, int] = {}
        self._served = 0  # takes of data so far (the serial of the next)
        self._holder: dict[str, Hashable] = {}  # member -> the key of the message it holds
        self._held: dict[Hashable, int] = {}  # key -> members holding it (no zero kept)
        self.yields = 0  # messages given back by `yield_turn` (a counter, for statistics)

    def __len__(self) -> int:
        return self._count

    # -- senders ----------------------------------------------------------------------------

    def put(self, message: Message, timeout: float | None = None) -> None:
        """Append a data message to its key's FIFO, blocking while that FIFO is full (see
        `Mailbox.put` for the timeout and the errors)."""
        key = fair_key(message)
        with self._lock:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            queue = self._queues.get(key)
            if queue is not None and len(queue) >= self.capacity:
                self._wait_for_key_room(key, message, timeout)
                queue = self._queues.get(key)
            self._append(key, message, queue)
            if self._not_empty:
                self._not_empty.notify()

    def _append(self, key: Hashable, message: Message, queue: deque[Message] | None) -> None:
        # With _lock held.
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(message)
        self._count += 1

    def _wait_for_key_room(self, key: Hashable, message: Message, timeout: float | None) -> None:
        # With _lock held; returns once `key`'s FIFO has room, or raises. Every take wakes
        # every blocked sender (few: one per key at most, in a pool's use), each checks its own.
        deadline = None if timeout is None else _monotonic() + timeout
        token = interrupt.current()
        while len(self._queues.get(key, ())) >= self.capacity:
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed")
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                raise MailboxFull(
                    f"mailbox {self.name!r} stayed full ({self.capacity} for one key) "
                    f"for {timeout}s",
                    message,
                )
            self._not_full.wait(self._lock, remaining, token)
            if token is not None and token.stopping:
                token.check()
        if self._closed:
            raise MailboxClosed(f"mailbox {self.name!r} is closed")

    def requeue_front(self, messages: list[Message]) -> bool:
        """Put messages back at the front of their keys' FIFOs, in order (see
        `Mailbox.requeue_front`); never blocks, even past the capacity."""
        with self._lock:
            if self._gone:
                return False
            for message in reversed(messages):
                self._push_front(message)
            if self._not_empty:
                self._not_empty.notify_all()
            return True

    def _push_front(self, message: Message) -> None:
        # With _lock held.
        key = fair_key(message)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.appendleft(message)
        self._count += 1

    # -- receivers --------------------------------------------------------------------------

    def take(
        self, max_items: int = 1, timeout: float | None = None, member: str | None = None
    ) -> list[Message]:
        """One message: `member`'s own first, then a control message, then the next data
        message in turn (see the module's doc). `max_items` is ignored: a fair pool's
        members take one unit at a time. Taking ends what `member` held."""
        with self._lock:
            if member is not None:
                self._release(member)
            if self._targeted and member in self._targeted:
                return [self._own_control(member)]
            if not self._control and not self._count:
                self._wait_for_any(timeout, member)
                if self._targeted and member in self._targeted:
                    return [self._own_control(member)]
            if self._control:
                return [self._control.popleft()]
            return [self._take_data(member)]

    def _take_data(self, member: str | None) -> Message:
        # With _lock held and a message queued: the next in turn, now held by `member`.
        key = self._next_key()
        queue = self._queues[key]
        message = queue.popleft()
        self._count -= 1
        if not queue:
            del self._queues[key]
        self._last[key] = self._served
        self._served += 1
        if member is not None:
            self._holder[member] = key
            self._held[key] = self._held.get(key, 0) + 1
        if self._not_full:
            self._not_full.notify_all()
        return message

    def _next_key(self) -> Hashable:
        # With _lock held and a message queued: the waiting key holding the fewest members;
        # among equals, the one served longest ago (one never served first, in the order
        # the keys began to wait). A handful of keys: one pass.
        held = self._held
        last = self._last
        keys = iter(self._queues)
        best = next(keys)
        rank = (held.get(best, 0), last.get(best, -1))
        for key in keys:
            mine = (held.get(key, 0), last.get(key, -1))
            if mine < rank:
                best, rank = key, mine
        return best

    def _release(self, member: str) -> None:
        # With _lock held: `member` holds nothing any more.
        key = self._holder.pop(member, _NOTHING)
        if key is not _NOTHING:
            count = self._held[key] - 1
            if count:
                self._held[key] = count
            else:
                del self._held[key]
                if key not in self._queues:
                    self._last.pop(key, None)  # neither held nor waiting: forgotten

    def _wait_for_any(self, timeout: float | None, member: str | None) -> None:
        # With _lock held; returns with a message for this receiver, or raises (as the base
        # class's _wait_for_message, over the keyed FIFOs).
        deadline = None if timeout is None else _monotonic() + timeout
        token = interrupt.current()
        while not self._control and not self._count:
            if self._targeted and member in self._targeted:
                return
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed and drained")
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"mailbox {self.name!r} stayed empty for {timeout}s")
            self._not_empty.wait(self._lock, remaining, token)
            if token is not None and token.stopping:
                if (self._control or self._count) and self._not_empty:
                    self._not_empty.notify()  # a wake-up we may have taken: pass it on
                token.check()

    # -- asyncio waiters (see `Mailbox.poll`): the same turns, over the keyed FIFOs --------

    def poll(self, max_items: int = 1, member: str | None = None) -> list[Message]:
        """`take` without waiting: [] when nothing is there for this receiver now (what
        `member` held ends all the same). Raises `MailboxClosed` once closed and drained."""
        with self._lock:
            if member is not None:
                self._release(member)
            if self._targeted and member in self._targeted:
                return [self._own_control(member)]
            if self._control:
                return [self._control.popleft()]
            if self._count:
                return [self._take_data(member)]
            if self._closed:
                raise MailboxClosed(f"mailbox {self.name!r} is closed and drained")
            return []

    def wait_message(self, waiter: Wakeable, member: str | None = None) -> bool:
        """See `Mailbox.wait_message`."""
        with self._lock:
            if (
                self._closed
                or self._control
                or self._count
                or (self._targeted and member in self._targeted)
            ):
                return False
            self._not_empty.append(waiter)
            return True

    def wait_room(self, waiter: Wakeable) -> bool:
        """See `Mailbox.wait_room`: registered while some key's FIFO is full (the sender's,
        which it found full), woken by the next take; False once none is full."""
        with self._lock:
            if self._closed or not any(len(q) >= self.capacity for q in self._queues.values()):
                return False
            self._not_full.append(waiter)
            return True

    def cancel_wait(self, waiter: Wakeable) -> None:
        """See `Mailbox.cancel_wait`: a wake-up it was given goes to the next waiter."""
        with self._lock:
            for queue in (self._not_full, self._not_empty):
                try:
                    queue.remove(waiter)  # by identity: a waiter has no __eq__
                except ValueError:
                    continue
                return
            if self._not_full:
                self._not_full.notify_all()  # every sender checks its own key's room
            if (self._control or self._count) and self._not_empty:
                self._not_empty.notify()

    def yield_turn(self, member: str, message: Message) -> bool:
        """`member`, busy with `message` (the data message it took last): give the member
        back if its key holds more than one member beyond another key that has messages
        waiting, and no receiver is idle. Then `message` goes back to the front of its key's
        FIFO, the member holds nothing, and this returns True: the caller drops its work on
        the message and takes the next. Otherwise False, and nothing changes."""
        with self._lock:
            key = self._holder.get(member, _NOTHING)
            if key is _NOTHING or self._gone or self._not_empty:
                return False
            ceiling = self._held[key] - 2  # another key holding this many or fewer is owed
            if not any(k != key and self._held.get(k, 0) <= ceiling for k in self._queues):
                return False
            self._push_front(message)
            self._release(member)
            self.yields += 1
            return True

    def leave(self, member: str) -> list[Message]:
        """`member`'s thread is exiting: it holds nothing any more (see `Mailbox.leave`)."""
        with self._lock:
            self._release(member)
        return super().leave(member)

    def share(self) -> FairShare:
        """Who holds what now, who waits, and how many turns were given back so far."""
        with self._lock:
            return FairShare(dict(self._held), frozenset(self._queues), self.yields)

    def drain(self) -> list[Message]:
        """Close for good and return what is queued (see `Mailbox.drain`), every key's."""
        items = super().drain()  # closed and gone from here on: nothing more is queued
        with self._lock:
            for queue in self._queues.values():
                items.extend(queue)
            self._queues.clear()
            self._last.clear()
            self._count = 0
        return items
