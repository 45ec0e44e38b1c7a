"""The asyncio bridge: await an actor from any running event loop, with no thread per call.

`ask` puts an `_AsyncReply` in the channel's pending requests, where a blocking ask puts its
`_ReplySlot`: whoever resolves it (the replying actor's thread, a dead letter, the channel's
close) hands the result to the asker's loop through `_Bridge`. A sender that finds a mailbox
full registers a `_Waiter` on it, in the queue where blocked threads wait: the mailbox's own
notify wakes it, through the same bridge. Nothing polls and no thread is started.

`_Bridge` is one per loop: a resolver on another thread appends to its deque and calls the
loop's `call_soon_threadsafe` only when the deque was idle (one self-pipe write per burst of
replies, not one per reply); on the loop's own thread it resolves at once.

Cancelling the awaiting task withdraws the request (its pending entry is removed): a reply
that comes later is a `late_reply` dead letter, as one after an `AskTimeout` is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .errors import AskTimeout, MailboxFull
from .message import _MUTABLE_TYPES, DeadLetterReason, MessageType, check_payload, new_message

if TYPE_CHECKING:
    from .channel import ThreadChannel
    from .interrupt import StopToken
    from .mailbox import Mailbox
    from .message import Message

__all__ = ["ask", "send"]

_log: Final = logging.getLogger("actord.aio")
_get_running_loop: Final = asyncio._get_running_loop
_COMMAND: Final = MessageType.COMMAND
_RESPONSE: Final = MessageType.RESPONSE

#: The stop token of the async actor whose task (or sub-task) runs now, if any: a request
#: it withdraws because it is stopping leaves a `stopped` dead letter, not a `late_reply`.
stop_token: Final[contextvars.ContextVar[StopToken | None]] = contextvars.ContextVar(
    "actord_stop_token", default=None
)


class _Bridge:
    """Hands results to one loop from any thread (see the module's doc)."""

    __slots__ = ("__weakref__", "_calls", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Calls waiting for the loop. append/popleft are atomic; only the loop pops.
        self._calls: deque[tuple[Callable[[Any, Any], None], Any, Any]] = deque()
        # True while a drain is scheduled and has not begun (read and written under the GIL;
        # a race costs at most one empty drain, never a lost call: see _drain).
        self._scheduled = False

    def call(self, fn: Callable[[Any, Any], None], a: Any, b: Any) -> None:
        """Any thread: run ``fn(a, b)`` on the loop; at once when called on it."""
        if _get_running_loop() is self._loop:
            fn(a, b)
            return
        self._calls.append((fn, a, b))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                _log.debug("reply for a closed event loop dropped")
                self._calls.clear()

    def _drain(self) -> None:
        # The loop. Cleared before popping: a call appended after the last pop sees False and
        # schedules another drain; one appended before it is popped here.
        self._scheduled = False
        calls = self._calls
        while calls:
            fn, a, b = calls.popleft()
            fn(a, b)


# One bridge per loop, found again by the loop (a one-entry cache before the weak dict).
_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridge] = (
    weakref.WeakKeyDictionary()
)
_last: list[Any] = [None, None]  # [loop, bridge] of the last lookup


def bridge(loop: asyncio.AbstractEventLoop) -> _Bridge:
    if _last[0] is loop:
        found: _Bridge = _last[1]
        return found
    made = _bridges.get(loop)
    if made is None:
        made = _bridges[loop] = _Bridge(loop)
    _last[0], _last[1] = loop, made
    return made


class _AsyncReply:
    """A pending request's entry for an asyncio asker: resolved from any thread."""

    __slots__ = ("bridge", "channel", "future", "request")

    def __init__(
        self, future: asyncio.Future[Any], bridge: _Bridge, channel: ThreadChannel
    ) -> None:
        self.future = future
        self.bridge = bridge
        self.channel = channel  # where a reply that came as the asker gave up is dead-lettered
        self.request: Message | None = None  # set once built: names that reply

    def set_result(self, result: Any, /) -> None:
        self.bridge.call(_deliver, self, result)

    def set_exception(self, exception: BaseException | None, /) -> None:
        self.bridge.call(_fail, self.future, exception)


def _deliver(reply: _AsyncReply, value: Any) -> None:
    future = reply.future
    if not future.done():
        future.set_result(value)
    elif reply.request is not None:
        # Popped by its replier just as the asker was cancelled: a reply nobody waits for.
        request = reply.request
        late = new_message(
            _RESPONSE, request.recipient, request.sender, value, request.correlation_id
        )
        reply.channel.dead_letter(late, DeadLetterReason.LATE_REPLY)


def _fail(future: asyncio.Future[Any], error: BaseException | None) -> None:
    if not future.done():
        future.set_exception(error if error is not None else RuntimeError("no reply"))


def _expire(future: asyncio.Future[Any], pending: dict[str, Any], cid: str, text: str) -> None:
    # The loop, at the deadline: whoever pops the entry resolves it.
    if pending.pop(cid, None) is not None and not future.done():
        future.set_exception(AskTimeout(text))


class _Waiter:
    """An asyncio sender or receiver registered in a mailbox's wait queue."""

    __slots__ = ("bridge", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, bridge: _Bridge) -> None:
        self.future: asyncio.Future[bool] = loop.create_future()
        self.bridge = bridge

    def release(self) -> None:
        # Any thread, with the mailbox lock held: never blocks.
        self.bridge.call(_wake, self.future, True)


def _wake(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def wait(
    loop: asyncio.AbstractEventLoop,
    register: Callable[[_Waiter], bool],
    cancel: Callable[[_Waiter], None],
    deadline: float | None,
) -> bool:
    """Register a waiter and await its wake-up: True when woken, or not registered (what it
    waits for is there now); False at `deadline` (loop time). Cancelling the caller removes
    the waiter (a wake-up it had taken goes to the next one)."""
    waiter = _Waiter(loop, bridge(loop))
    if not register(waiter):
        return True
    future = waiter.future
    expiry = None if deadline is None else loop.call_at(deadline, _wake, future, False)
    try:
        woken = await future
    except BaseException:
        cancel(waiter)
        raise
    finally:
        if expiry is not None:
            expiry.cancel()
    if not woken:
        cancel(waiter)
    return woken


async def _put(
    channel: ThreadChannel,
    message: Message,
    loop: asyncio.AbstractEventLoop,
    deadline: float | None,
) -> bool:
    """Deliver `message`, awaiting room while the mailbox is full; False at `deadline`."""
    full: Mailbox | None = channel.offer(message)
    while full is not None:
        register = functools.partial(channel.wait_room, full)
        cancel = functools.partial(channel.cancel_wait, full)
        if not await wait(loop, register, cancel, deadline):
            return False
        full = channel.offer(message)
    return True


async def send(
    channel: ThreadChannel,
    recipient: str,
    payload: Any,
    sender: str,
    mtype: MessageType = MessageType.DATA,
    timeout: float | None = None,
) -> None:
    """Send from a running loop, awaiting room while the mailbox is full (never blocking the
    loop). Raises `MailboxFull` after `timeout` (the message is not enqueued), as `send`."""
    if type(payload) in _MUTABLE_TYPES:
        check_payload(payload)
    message = new_message(mtype, sender, recipient, payload, None)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    if not await _put(channel, message, loop, deadline):
        raise MailboxFull(f"mailbox {recipient!r} stayed full for {timeout}s", message)


async def ask(
    channel: ThreadChannel,
    recipient: str,
    payload: Any,
    sender: str,
    timeout: float,
    mtype: MessageType = _COMMAND,
) -> Any:
    """Send a request from a running loop and await the reply's payload: `AskTimeout`,
    `ActorDead` or the handler's own exception as `ThreadChannel.ask` raises them."""
    if type(payload) in _MUTABLE_TYPES:
        check_payload(payload)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    reply = _AsyncReply(future, bridge(loop), channel)
    correlation_id = f"{sender}:{next(channel._correlation)}"
    pending = channel._pending
    pending[correlation_id] = reply
    deadline = loop.time() + timeout  # one deadline for the send and the reply
    expiry = loop.call_at(
        deadline,
        _expire,
        future,
        pending,
        correlation_id,
        f"no reply from {recipient!r} within {timeout}s",
    )
    try:
        message = new_message(mtype, sender, recipient, payload, correlation_id)
        reply.request = message
        if not await _put(channel, message, loop, deadline):
            raise AskTimeout(f"{recipient!r} stayed full: no request sent within {timeout}s")
        return await future
    except asyncio.CancelledError:
        # Withdrawn: what comes back later is a dead letter (late, or the asker stopped).
        # (A reply popped by its replier just before is dead-lettered by `_deliver`.)
        if pending.pop(correlation_id, None) is not None:
            token = stop_token.get()
            if token is not None and token.stopping:
                channel._remember(channel._abandoned, correlation_id)
        raise
    finally:
        expiry.cancel()
        pending.pop(correlation_id, None)
