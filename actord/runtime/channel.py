"""ThreadChannel: the one way actors talk. Mailboxes, routing, pub/sub, request/reply, dead letters.

Routing reads never lock: the table is a dict that writers replace whole (copy-on-write) under a
lock, so a reader sees either the old or the new table, never a half-updated one. That is the
seed's read-write lock, done so that readers never wait at all.

Nothing is dropped silently: a message for an unknown or stopped recipient, one whose handler
raised, and a reply that came too late all become dead letters, counted by reason, kept in a
bounded ring and published as EVENTs from `DEAD_LETTERS`.
"""

from __future__ import annotations

import _thread
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future
from typing import Any, Final, Protocol

from . import interrupt
from .errors import (
    ActorDead,
    ActorStopping,
    AskTimeout,
    ChannelClosed,
    InvalidArgument,
    MailboxClosed,
    MailboxFull,
    NameTaken,
    UnknownActor,
)
from .fair import FairMailbox, FairShare
from .mailbox import Mailbox, Wakeable
from .message import (
    _MUTABLE_TYPES,
    Control,
    ControlKind,
    DeadLetter,
    DeadLetterReason,
    Message,
    MessageType,
    check_payload,
    new_message,
)
from .timers import TimerService

__all__ = ["DEAD_LETTERS", "Inbox", "ThreadChannel"]

DEAD_LETTERS: Final = "$deadletters"
# How many names of stopped actors (and requests whose asker stopped) are remembered, so that
# what is sent to them late is told apart from a send to a name nothing ever answered to.
_GONE_KEPT: Final = 4096
_log: Final = logging.getLogger("actord.channel")
_RESPONSE: Final = MessageType.RESPONSE
_allocate_lock: Final = _thread.allocate_lock
_monotonic: Final = time.monotonic


class Resolvable(Protocol):
    """What waits in `_pending` for a reply: a `Future`, a `_ReplySlot`, or an asyncio
    reply (see `aio.py`). Resolved once, from any thread, by whoever pops it."""

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class _ReplySlot:
    """A one-shot reply for a blocking `ask`: the asker blocks on a bare lock, which wakes it
    faster than a `concurrent.futures.Future` (whose Condition is Python code). It has the
    two setters a Future has, and is resolved once: by whoever pops it from `_pending`."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = _allocate_lock()
        self._done.acquire()
        self.value: Any = None
        self.error: BaseException | None = None

    def set_result(self, value: Any) -> None:
        self.value = value
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self.error = error
        self._done.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until resolved or `timeout` (None: for as long as it takes)."""
        return self._done.acquire(True, -1 if timeout is None else timeout)


class Inbox:
    """A receiver's hold on one mailbox: the mailbox itself, not its name, so a receiver that
    outlives its actor (stuck past a stop) can never read the mailbox of a new actor that
    reuses the name, and what it puts back after the drain becomes dead letters."""

    __slots__ = ("_channel", "_mailbox", "member")

    def __init__(self, channel: ThreadChannel, mailbox: Mailbox, member: str) -> None:
        self._channel = channel
        self._mailbox = mailbox
        self.member = member
        mailbox.join(member)  # a name a member that left had: it is this one's now

    def receive(self, max_items: int) -> list[Message]:
        """Block for up to `max_items` messages, control messages first (this member's own
        before the shared ones). Raises `MailboxClosed` (`ChannelClosed` once the channel is
        closed) when closed and drained, `ActorStopping` when the caller is stopped."""
        try:
            return self._mailbox.take(max_items, None, self.member)
        except MailboxClosed:
            if self._channel.closed:
                raise ChannelClosed("the channel is closed") from None
            raise

    def poll(self, max_items: int) -> list[Message]:
        """`receive` without waiting (an asyncio receiver): [] when nothing is there now."""
        try:
            return self._mailbox.poll(max_items, self.member)
        except MailboxClosed:
            if self._channel.closed:
                raise ChannelClosed("the channel is closed") from None
            raise

    def wait(self, waiter: Wakeable) -> bool:
        """Register an asyncio receiver's `waiter` (see `Mailbox.wait_message`)."""
        return self._mailbox.wait_message(waiter, self.member)

    def cancel_wait(self, waiter: Wakeable) -> None:
        self._mailbox.cancel_wait(waiter)

    def requeue(self, messages: list[Message]) -> None:
        """Put taken-but-unhandled messages back at the front, in order; dead letters
        (STOPPED) if the mailbox has been drained for good meanwhile."""
        if not self._mailbox.requeue_front(messages):
            for message in messages:
                self._channel.dead_letter(message, DeadLetterReason.STOPPED)

    def close(self) -> None:
        """Refuse new data; receivers drain what is queued, then get `MailboxClosed`."""
        self._mailbox.close()

    def yield_turn(self, message: Message) -> bool:
        """This member, busy with `message`: True if a fair mailbox took its turn back for
        another key (`message` is queued again; see `FairMailbox.yield_turn`). Always False
        on a plain mailbox."""
        mailbox = self._mailbox
        return type(mailbox) is FairMailbox and mailbox.yield_turn(self.member, message)

    def detach(self) -> None:
        """Free the name: remove the route to this mailbox, if it is still the one under
        its name (never a newer mailbox that reuses it), and close it. Takes no callback."""
        self._channel._detach(self._mailbox)

    def discard(self) -> int:
        """After `detach`: what is still queued becomes dead letters (STOPPED); returns how
        many. Requests among them fail with `ActorDead` at once."""
        return self._channel._discard(self._mailbox)

    def control(self, kind: ControlKind, *, anyone: bool = False) -> None:
        """A CONTROL message for this member alone (never blocks): a stop or a restart
        reaches every member of a pool, never the one that happens to be free twice. With
        `anyone`, for whichever member takes it first (a pool shrinking by one)."""
        message = Message(MessageType.CONTROL, "$system", self._mailbox.name, Control(kind))
        self._mailbox.put_control(message, None if anyone else self.member)

    def tell(self, payload: Any, *, sender: str, mtype: MessageType) -> None:
        """Any thread: a message for this member alone, taken before the shared queue (an
        operator's command to ``pool#i``). Never blocks: `MailboxFull` while `capacity`
        messages already wait for this member; a dead letter once its actor is stopping."""
        if type(payload) in _MUTABLE_TYPES:
            check_payload(payload)
        message = new_message(mtype, sender, self.member, payload, None)
        try:
            self._mailbox.put_member(message, self.member)
        except MailboxClosed:
            # Never re-routed by name: a new actor may have taken it meanwhile.
            if self._channel.closed:
                raise ChannelClosed("the channel is closed") from None
            self._channel.dead_letter(message, DeadLetterReason.STOPPED)

    def leave(self) -> int:
        """This member's thread, as it exits: what still waits for this member alone becomes
        dead letters (STOPPED; a pending ping fails at once). Returns how many."""
        leftovers = self._mailbox.leave(self.member)
        for message in leftovers:
            self._channel.dead_letter(message, DeadLetterReason.STOPPED)
        return len(leftovers)

    def size(self) -> tuple[int, int]:
        """(depth, capacity) of this mailbox; (0, 0) once it has been drained for good."""
        mailbox = self._mailbox
        return (0, 0) if mailbox.gone else (len(mailbox), mailbox.capacity)


class ThreadChannel:
    """Routes typed messages between named, bounded mailboxes. Safe to use from any thread."""

    def __init__(
        self, *, dead_letter_capacity: int = 1000, timers: TimerService | None = None
    ) -> None:
        if dead_letter_capacity < 1:
            raise InvalidArgument("dead_letter_capacity must be >= 1")
        # _lock serialises writers of _routes, _subscribers and _closed; readers take no lock.
        self._lock = threading.Lock()
        self._routes: dict[str, Mailbox] = {}  # replaced whole, never mutated in place
        self._subscribers: dict[str, tuple[str, ...]] = {}  # replaced whole, as _routes
        self._closed = False
        # Open requests by correlation id. Single dict operations are atomic; whoever pops an
        # entry is the one that resolves its future.
        self._pending: dict[str, Resolvable] = {}
        self._correlation = itertools.count(1)
        # _dead_lock guards _dead_ring, _dead_counts, _gone and _abandoned.
        self._dead_lock = threading.Lock()
        self._dead_ring: deque[DeadLetter] = deque(maxlen=dead_letter_capacity)
        self._dead_counts: Counter[DeadLetterReason] = Counter()
        # The most recent names whose mailbox was removed (an actor that stopped) and requests
        # whose asker stopped waiting: a message sent to either later is STOPPED, the expected
        # end of a short-lived actor (a job's reader), not UNKNOWN_RECIPIENT or LATE_REPLY.
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self.timers = timers if timers is not None else TimerService()

    # -- mailboxes -------------------------------------------------------------------------

    def register(self, name: str, capacity: int = 1024, *, fair: bool = False) -> None:
        """Create the bounded mailbox `name`. Raises `NameTaken` if it exists. With `fair`,
        a `FairMailbox`: one FIFO of `capacity` per key, served in turn (for a pool)."""
        if capacity < 1:
            raise InvalidArgument(f"mailbox capacity must be >= 1, got {capacity}")
        if not name or name.startswith("$"):
            raise InvalidArgument(f"invalid mailbox name {name!r} (empty or starting with '$')")
        with self._lock:
            if self._closed:
                raise ChannelClosed("the channel is closed")
            if name in self._routes:
                raise NameTaken(f"a mailbox named {name!r} already exists")
            mailbox = FairMailbox(name, capacity) if fair else Mailbox(name, capacity)
            self._routes = {**self._routes, name: mailbox}
        with self._dead_lock:
            self._gone.pop(name, None)

    def unregister(self, name: str) -> int:
        """Remove the mailbox; whatever is still queued becomes dead letters (STOPPED).

        Returns how many messages were dead-lettered.
        """
        mailbox = self._routes.get(name)
        if mailbox is None or not self._detach(mailbox):
            raise UnknownActor(f"no mailbox named {name!r}")
        return self._discard(mailbox)

    def _detach(self, mailbox: Mailbox) -> bool:
        # Remove the route to `mailbox` if it is still the one under its name; close it.
        name = mailbox.name
        with self._lock:
            if self._routes.get(name) is not mailbox:
                return False
            routes = dict(self._routes)
            del routes[name]
            self._routes = routes
            self._subscribers = {
                pub: tuple(s for s in subs if s != name)
                for pub, subs in self._subscribers.items()
                if pub != name
            }
        self._remember(self._gone, name)
        mailbox.close()
        return True

    def _remember(self, gone: OrderedDict[str, None], key: str) -> None:
        with self._dead_lock:
            gone[key] = None
            gone.move_to_end(key)
            if len(gone) > _GONE_KEPT:
                gone.popitem(last=False)

    def _remembered(self, gone: OrderedDict[str, None], key: str | None) -> bool:
        with self._dead_lock:
            return key in gone

    def _discard(self, mailbox: Mailbox) -> int:
        # What is still queued becomes dead letters (and fails the requests among it).
        leftovers = mailbox.drain()
        for message in leftovers:
            self.dead_letter(message, DeadLetterReason.STOPPED)
        return len(leftovers)

    def close_mailbox(self, name: str) -> None:
        """Stop accepting data for `name`; its receivers drain what is queued, then stop."""
        self._mailbox(name).close()

    def inbox(self, name: str, member: str) -> Inbox:
        """The receiving end of `name`'s mailbox for one member (see `Inbox`)."""
        return Inbox(self, self._mailbox(name), member)

    def names(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def depth(self, name: str) -> int:
        """Data messages queued for `name` now."""
        return len(self._mailbox(name))

    def capacity(self, name: str) -> int:
        return self._mailbox(name).capacity

    def size(self, name: str) -> tuple[int, int]:
        """(depth, capacity) of `name`'s mailbox, or (0, 0) once it is gone: never raises,
        for readers (statistics) racing with actors being removed."""
        mailbox = self._routes.get(name)  # one read of the table: no check-then-act
        return (0, 0) if mailbox is None else (len(mailbox), mailbox.capacity)

    def fair_share(self, name: str) -> FairShare | None:
        """For a fair mailbox: who holds what now, who waits (see `FairMailbox.share`);
        None for a plain or unknown one. Never raises (for statistics)."""
        mailbox = self._routes.get(name)
        return mailbox.share() if type(mailbox) is FairMailbox else None

    def _mailbox(self, name: str) -> Mailbox:
        mailbox = self._routes.get(name)
        if mailbox is None:
            if self._closed:
                raise ChannelClosed("the channel is closed")
            raise UnknownActor(f"no mailbox named {name!r}")
        return mailbox

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        recipient: str,
        payload: Any,
        *,
        sender: str,
        mtype: MessageType = MessageType.DATA,
        correlation_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Build a message and deliver it; blocks while the recipient's mailbox is full.

        Raises `MailboxFull` if `timeout` runs out (the message is not enqueued), `BadPayload`
        for a mutable container payload, `ChannelClosed` once the channel is closed. An unknown
        or stopped recipient makes the message a dead letter instead.
        """
        return self.deliver(recipient, payload, sender, mtype, correlation_id, timeout)

    def deliver(
        self,
        recipient: str,
        payload: Any,
        sender: str,
        mtype: MessageType,
        correlation_id: str | None,
        timeout: float | None,
        /,
    ) -> Message:
        """`send` with positional arguments: the hot path that actors and refs call."""
        if type(payload) in _MUTABLE_TYPES:
            check_payload(payload)
        message = new_message(mtype, sender, recipient, payload, correlation_id)
        mailbox = self._routes.get(recipient) if mtype is not _RESPONSE else None
        if mailbox is None:
            self.post(message, timeout)
            return message
        try:
            mailbox.put(message, timeout)
        except MailboxClosed:
            self.post(message, timeout)  # a dead letter, or ChannelClosed
        except ActorStopping:
            self._undeliverable(message)
        return message

    def post(self, message: Message, timeout: float | None = None) -> bool:
        """Deliver a prebuilt message (see `send`). RESPONSEs resolve their request's future.

        True if the message was enqueued (or resolved its request); False if it became a
        dead letter."""
        if message.type is _RESPONSE:
            return self._resolve(message)
        mailbox = self._routes.get(message.recipient)
        if mailbox is None:
            if self._closed:
                return self._undeliverable(message)
            stopped = self._remembered(self._gone, message.recipient)
            reason = DeadLetterReason.STOPPED if stopped else DeadLetterReason.UNKNOWN_RECIPIENT
            self.dead_letter(message, reason)
            return False
        try:
            mailbox.put(message, timeout)
        except MailboxClosed:
            if self._closed:
                return self._undeliverable(message)
            self.dead_letter(message, DeadLetterReason.STOPPED)
            return False
        except ActorStopping:
            return self._undeliverable(message)
        return True

    def _undeliverable(self, message: Message) -> bool:
        # The channel is closed, or the sending actor was stopped while it waited for room.
        # From a final hook (on_stop, on_failure) that is a dead letter, so the hook's cleanup
        # runs to its end; anywhere else the sender hears why (and its loop stops).
        if interrupt.in_final_hook():
            self.dead_letter(message, DeadLetterReason.STOPPED)
            return False
        if self._closed:
            raise ChannelClosed("the channel is closed")
        token = interrupt.current()
        raise ActorStopping(f"{token.owner if token else message.sender} is stopping")

    def offer(self, message: Message) -> Mailbox | None:
        """Deliver without waiting (an asyncio sender): None once delivered, dead-lettered
        or resolved (as `post`); the recipient's mailbox if it is full, for the sender to
        wait on (`wait_room`) and offer again. Raises `ChannelClosed` once closed."""
        if message.type is _RESPONSE:
            self._resolve(message)
            return None
        mailbox = self._routes.get(message.recipient)
        if mailbox is None:
            self.post(message, 0)
            return None
        try:
            mailbox.put(message, 0)
        except MailboxFull:
            return mailbox
        except MailboxClosed:
            self.post(message, 0)  # a dead letter, or ChannelClosed
        return None

    def offer_new(
        self, recipient: str, payload: Any, sender: str, mtype: MessageType, /
    ) -> Message | None:
        """`deliver` without waiting, for an asyncio sender (`aio.send`): build the message
        and `offer` it. None once delivered, dead-lettered or resolved; the message itself
        if the recipient's mailbox is full (offer it again once there is room)."""
        if type(payload) in _MUTABLE_TYPES:
            check_payload(payload)
        message = new_message(mtype, sender, recipient, payload, None)
        # The common case of `offer` inline: one call less per message (the async hot path).
        mailbox = self._routes.get(recipient) if mtype is not _RESPONSE else None
        if mailbox is not None:
            try:
                mailbox.put(message, 0)
            except MailboxFull:
                return message
            except MailboxClosed:
                pass  # offer it again: a dead letter, or ChannelClosed
            else:
                return None
        return None if self.offer(message) is None else message

    @staticmethod
    def wait_room(mailbox: Mailbox, waiter: Wakeable) -> bool:
        """Register an asyncio sender's `waiter` on a full mailbox (see `Mailbox.wait_room`)."""
        return mailbox.wait_room(waiter)

    @staticmethod
    def cancel_wait(mailbox: Mailbox, waiter: Wakeable) -> None:
        mailbox.cancel_wait(waiter)

    def try_post(self, message: Message) -> bool:
        """Deliver without waiting; a full mailbox makes it a dead letter (MAILBOX_FULL).

        For senders that must never block: the timer thread and dead-letter notifications.
        """
        try:
            return self.post(message, timeout=0)
        except MailboxFull:
            self.dead_letter(message, DeadLetterReason.MAILBOX_FULL)
            return False

    # -- receiving -------------------------------------------------------------------------

    def receive(self, name: str, max_items: int = 1, timeout: float | None = None) -> list[Message]:
        """Take up to `max_items` messages for `name`, control messages first.

        Blocks while empty; raises `TimeoutError` when `timeout` runs out, `MailboxClosed` once
        the mailbox is closed and drained or removed.
        """
        mailbox = self._routes.get(name)
        if mailbox is None:
            if self._closed:
                raise ChannelClosed("the channel is closed")
            raise MailboxClosed(f"no mailbox named {name!r}")
        try:
            return mailbox.take(max_items, timeout)
        except MailboxClosed:
            if self._closed:
                raise ChannelClosed("the channel is closed") from None
            raise

    # -- request / reply -------------------------------------------------------------------

    def request(
        self,
        recipient: str,
        payload: Any,
        *,
        sender: str,
        timeout: float | None = None,
        mtype: MessageType = MessageType.COMMAND,
    ) -> Future[Any]:
        """Send a request; the returned future is resolved by the RESPONSE with its id.

        With `timeout`, the future fails with `AskTimeout` when no reply came in time, and a
        later reply becomes a dead letter. A stopped or unknown recipient fails it with
        `ActorDead`; a handler that raises fails it with that exception.
        """
        check_payload(payload)
        correlation_id = f"{sender}:{next(self._correlation)}"
        future: Future[Any] = Future()
        # A sent request cannot be taken back: the future is "running" and cancel() refuses,
        # so whoever resolves it never meets a cancelled future.
        future.set_running_or_notify_cancel()
        self._pending[correlation_id] = future
        try:
            if timeout is not None:
                expiry = self.timers.call_later(
                    timeout, lambda: self._expire(correlation_id, timeout)
                )
                future.add_done_callback(lambda _: expiry.cancel())
            self.post(new_message(mtype, sender, recipient, payload, correlation_id), timeout)
        except MailboxFull:
            # The request never went in: it ends as any unanswered request does.
            if self._pending.pop(correlation_id, None) is not None:
                future.set_exception(
                    AskTimeout(f"{recipient!r} stayed full: no request sent within {timeout}s")
                )
        except BaseException:
            self._pending.pop(correlation_id, None)
            raise
        return future

    def ask(
        self,
        recipient: str,
        payload: Any,
        *,
        sender: str,
        timeout: float,
        mtype: MessageType = MessageType.COMMAND,
    ) -> Any:
        """Send a request and wait for the reply's payload (see `request` for the errors)."""
        if type(payload) in _MUTABLE_TYPES:
            check_payload(payload)
        correlation_id = f"{sender}:{next(self._correlation)}"
        pending = self._pending
        slot = pending[correlation_id] = _ReplySlot()
        deadline = _monotonic() + timeout  # one deadline for the send and the reply
        try:
            message = new_message(mtype, sender, recipient, payload, correlation_id)
            mailbox = self._routes.get(recipient)
            try:
                if mailbox is None:
                    self.post(message, timeout)  # a dead letter that fails the slot, or closed
                else:
                    try:
                        mailbox.put(message, timeout)
                    except MailboxClosed:
                        self.post(message, timeout)  # a dead letter that fails the slot
            except MailboxFull:
                raise AskTimeout(
                    f"{recipient!r} stayed full: no request sent within {timeout}s"
                ) from None
            remaining = max(0.0, deadline - _monotonic())
            return self._await_reply(slot, correlation_id, recipient, remaining)
        finally:
            pending.pop(correlation_id, None)

    def ask_control(
        self,
        name: str,
        kind: ControlKind,
        *,
        timeout: float,
        sender: str = "$system",
        member: str | None = None,
    ) -> Any:
        """Send a CONTROL request through the control lane and wait for the loop's reply:
        from whichever member takes it first, or from `member` alone (``pool#i``)."""
        mailbox = self._mailbox(name)
        if mailbox.closed:
            raise ActorDead(f"{name!r} is stopping or stopped")
        correlation_id = f"{sender}:{next(self._correlation)}"
        slot = self._pending[correlation_id] = _ReplySlot()
        recipient = member or name
        try:
            message = Message(MessageType.CONTROL, sender, recipient, Control(kind), correlation_id)
            if not mailbox.put_control(message, member):
                raise ActorDead(f"{recipient!r} has stopped")
            return self._await_reply(slot, correlation_id, recipient, timeout)
        finally:
            self._pending.pop(correlation_id, None)

    def _await_reply(
        self, slot: _ReplySlot, correlation_id: str, recipient: str, timeout: float
    ) -> Any:
        token = interrupt.current()
        if token is not None:  # an actor asking: its stop ends the wait
            owner = token.owner
            token.arm(lambda: self._interrupt_reply(correlation_id, owner))
        try:
            if not slot.wait(timeout):
                if self._pending.pop(correlation_id, None) is not None:
                    raise AskTimeout(f"no reply from {recipient!r} within {timeout}s")
                slot.wait(None)  # popped by a resolver that is setting it right now
        finally:
            if token is not None:
                token.disarm()
        if slot.error is not None:
            raise slot.error
        return slot.value

    def _interrupt_reply(self, correlation_id: str, owner: str) -> None:
        # The stopping thread: whoever pops the slot resolves it (here, or the replier).
        slot = self._pending.pop(correlation_id, None)
        if slot is not None:
            self._remember(self._abandoned, correlation_id)
            slot.set_exception(ActorStopping(f"{owner} is stopping"))

    def _late(self, response: Message) -> None:
        # A reply nobody waits for: its asker stopped (STOPPED), or gave up (LATE_REPLY).
        stopped = self._remembered(self._abandoned, response.correlation_id)
        self.dead_letter(
            response, DeadLetterReason.STOPPED if stopped else DeadLetterReason.LATE_REPLY
        )

    def reply(self, request: Message, payload: Any, *, sender: str) -> None:
        """Answer `request` (which must carry a correlation id) with `payload`."""
        correlation_id = request.correlation_id
        if correlation_id is None:
            raise InvalidArgument(f"message {request.id} is not a request (no correlation id)")
        if type(payload) in _MUTABLE_TYPES:
            check_payload(payload)
        waiter = self._pending.pop(correlation_id, None)
        if waiter is None:
            self._late(Message(_RESPONSE, sender, request.sender, payload, correlation_id))
        elif type(waiter) is _ReplySlot:  # a blocking ask: no method call on the hot path
            waiter.value = payload
            waiter._done.release()
        else:
            waiter.set_result(payload)

    def _resolve(self, response: Message) -> bool:
        waiter = (
            self._pending.pop(response.correlation_id, None)
            if response.correlation_id is not None
            else None
        )
        if waiter is None:
            self._late(response)
            return False
        waiter.set_result(response.payload)
        return True

    def _expire(self, correlation_id: str, timeout: float) -> None:
        # Timer thread.
        future = self._pending.pop(correlation_id, None)
        if future is not None:
            future.set_exception(AskTimeout(f"no reply to {correlation_id} within {timeout}s"))

    def pending_requests(self) -> int:
        return len(self._pending)

    # -- failures and dead letters ---------------------------------------------------------

    def fail(self, message: Message, error: BaseException) -> None:
        """Record that a handler raised on `message`: a FAILED dead letter; a requester gets
        the exception itself."""
        if message.correlation_id is not None and message.type is not _RESPONSE:
            future = self._pending.pop(message.correlation_id, None)
            if future is not None:
                future.set_exception(error)
        self.dead_letter(message, DeadLetterReason.FAILED, f"{type(error).__name__}: {error}")

    def dead_letter(
        self, message: Message, reason: DeadLetterReason, error: str | None = None
    ) -> None:
        """Count, keep and publish a message that will not be handled."""
        if message.correlation_id is not None and message.type is not _RESPONSE:
            future = self._pending.pop(message.correlation_id, None)
            if future is not None:
                future.set_exception(
                    ActorDead(f"{message.recipient!r} cannot handle the request ({reason.value})")
                )
        letter = DeadLetter(message, reason, error)
        with self._dead_lock:
            self._dead_counts[reason] += 1
            if message.sender == DEAD_LETTERS:
                return  # a lost dead-letter notice is counted, never re-published
            self._dead_ring.append(letter)
        _log.debug("dead letter (%s) %s -> %s", reason.value, message.sender, message.recipient)
        for subscriber in self._subscribers.get(DEAD_LETTERS, ()):
            try:
                self.try_post(Message(MessageType.EVENT, DEAD_LETTERS, subscriber, letter))
            except ChannelClosed:
                break  # closing: the letter is counted and kept; its notices are moot

    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The most recent dead letters, oldest first (bounded ring)."""
        with self._dead_lock:
            return tuple(self._dead_ring)

    def dead_letter_counts(self) -> dict[DeadLetterReason, int]:
        """Dead letters counted by reason since the channel was created."""
        with self._dead_lock:
            return dict(self._dead_counts)

    # -- publish / subscribe ---------------------------------------------------------------

    def subscribe(self, publisher: str, subscriber: str) -> None:
        """Deliver every EVENT `publisher` publishes to `subscriber` as well."""
        with self._lock:
            subs = self._subscribers.get(publisher, ())
            if subscriber not in subs:
                self._subscribers = {**self._subscribers, publisher: (*subs, subscriber)}

    def unsubscribe(self, publisher: str, subscriber: str) -> None:
        with self._lock:
            subs = tuple(s for s in self._subscribers.get(publisher, ()) if s != subscriber)
            self._subscribers = {**self._subscribers, publisher: subs}

    def subscribers(self, publisher: str) -> tuple[str, ...]:
        return self._subscribers.get(publisher, ())

    def publish(self, publisher: str, payload: Any, *, timeout: float | None = None) -> int:
        """Send `payload` as an EVENT to each subscriber of `publisher`, in subscription order.

        Blocks for room like `send`. With a `timeout`, a subscriber whose mailbox stays full
        gets a dead letter (MAILBOX_FULL) instead, and the others still get the event: one
        slow subscriber never fails the publisher. Returns how many subscribers got it into
        their mailbox (a stopped or unknown one gets a dead letter and is not counted).
        """
        check_payload(payload)
        delivered = 0
        for subscriber in self._subscribers.get(publisher, ()):
            message = new_message(MessageType.EVENT, publisher, subscriber, payload, None)
            try:
                delivered += self.post(message, timeout)
            except MailboxFull:
                self.dead_letter(message, DeadLetterReason.MAILBOX_FULL)
        return delivered

    # -- closing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every mailbox, fail every open request with `ChannelClosed`, stop the timers.

        Blocked senders and receivers wake with `ChannelClosed`.
        """
        with self._lock:
            self._closed = True
            mailboxes = list(self._routes.values())
        for mailbox in mailboxes:
            mailbox.close()
        for correlation_id in list(self._pending):
            future = self._pending.pop(correlation_id, None)
            if future is not None:
                future.set_exception(ChannelClosed("the channel closed before the reply"))
        self.timers.close()
