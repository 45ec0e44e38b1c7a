"""The asyncio bridge: await an actor from any running event loop, with no thread per call.

`ask` puts an `AskFuture` in the channel's pending requests, where a blocking ask puts its
`_ReplySlot`, and returns it (no coroutine, no task per ask): whoever resolves it (the
replying actor's thread, a dead letter, the channel's close) hands the result to the asker's
loop through `_Bridge`. A sender that finds a mailbox
full registers a `_Waiter` on it, in the queue where blocked threads wait: the mailbox's own
notify wakes it, through the same bridge. Nothing polls and no thread is started.

`_Bridge` is one per loop: a resolver on another thread appends to its deque and calls the
loop's `call_soon_threadsafe` only when the deque was idle (one self-pipe write per burst of
replies, not one per reply); on the loop's own thread it resolves at once.

Cancelling the future (or the task awaiting it) withdraws the request (its pending entry is
removed): a reply that comes later is a `late_reply` dead letter, as one after an
`AskTimeout` is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Final

from .errors import AskTimeout, MailboxFull
from .message import _MUTABLE_TYPES, DeadLetterReason, MessageType, check_payload, new_message

if TYPE_CHECKING:
    from .channel import ThreadChannel
    from .interrupt import StopToken
    from .mailbox import Mailbox
    from .message import Message

__all__ = ["SENT", "ask", "send", "send_when_room"]

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
        try:
            while calls:
                fn, a, b = calls.popleft()
                fn(a, b)
        finally:
            if calls:  # a call raised: the others still run, in a drain of their own
                self._scheduled = True
                self._loop.call_soon(self._drain)


# One bridge per loop, found again by the loop (a one-entry cache before the weak dict).
_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridge] = (
    weakref.WeakKeyDictionary()
)
# (loop, bridge) of the last lookup: one tuple, replaced whole, so that loops on several
# threads never read one loop's entry with another's bridge.
_last: tuple[asyncio.AbstractEventLoop | None, _Bridge | None] = (None, None)


def bridge(loop: asyncio.AbstractEventLoop) -> _Bridge:
    global _last  # noqa: PLW0603 - the one-entry cache, replaced whole
    last_loop, last_bridge = _last
    if last_loop is loop and last_bridge is not None:
        return last_bridge
    made = _bridges.get(loop)
    if made is None:
        made = _bridges[loop] = _Bridge(loop)
    _last = (loop, made)
    return made


_future_set_result: Final = asyncio.Future.set_result
_future_set_exception: Final = asyncio.Future.set_exception
_future_cancel: Final = asyncio.Future.cancel


class AskFuture(asyncio.Future[Any]):
    """The reply to one `ask`: await it (or gather it). It is the request's entry among the
    channel's pending requests, resolved from any thread (the replier's) through its loop's
    bridge. Cancelling it (or the task awaiting it) withdraws the request."""

    __slots__ = ("_bridge", "_channel", "_expiry", "_request", "_sending", "_token")

    _bridge: _Bridge
    _channel: ThreadChannel
    _request: Message
    _expiry: asyncio.TimerHandle
    _sending: asyncio.Task[None] | None  # awaiting room in a full mailbox, if it had to
    _token: StopToken | None  # the asking async actor's: its stop makes a late reply STOPPED

    def set_result(self, result: Any, /) -> None:
        self._bridge.call(_deliver, self, result)

    def set_exception(self, exception: BaseException | type[BaseException], /) -> None:
        self._bridge.call(_fail, self, exception)

    def cancel(self, msg: Any | None = None) -> bool:
        if not _future_cancel(self, msg):
            return False
        # Withdrawn: what comes back later is a dead letter (late, or the asker stopped).
        # (A reply popped by its replier just before is dead-lettered by `_deliver`.)
        self._expiry.cancel()
        if self._sending is not None:
            self._sending.cancel()
        channel = self._channel
        correlation_id = self._request.correlation_id
        if channel._pending.pop(correlation_id, None) is not None:  # type: ignore[arg-type]
            token = self._token
            if token is not None and token.stopping:
                channel._remember(channel._abandoned, correlation_id)  # type: ignore[arg-type]
        return True


def _deliver(future: AskFuture, value: Any) -> None:
    # The loop.
    if not future.done():
        future._expiry.cancel()
        _future_set_result(future, value)
    else:
        # Popped by its replier just as the asker was cancelled: a reply nobody waits for.
        request = future._request
        late = new_message(
            _RESPONSE, request.recipient, request.sender, value, request.correlation_id
        )
        future._channel.dead_letter(late, DeadLetterReason.LATE_REPLY)


def _fail(future: AskFuture, error: BaseException | type[BaseException]) -> None:
    # The loop.
    if not future.done():
        future._expiry.cancel()
        _future_set_exception(future, error)


def _expire(future: AskFuture, timeout: float) -> None:
    # The loop, at the deadline: whoever pops the entry resolves it.
    request = future._request
    if future._channel._pending.pop(request.correlation_id, None) is None:  # type: ignore[arg-type]
        return
    sending = future._sending
    if sending is not None and not sending.done():
        sending.cancel()
        text = f"{request.recipient!r} stayed full: no request sent within {timeout}s"
    else:
        text = f"no reply from {request.recipient!r} within {timeout}s"
    if not future.done():
        _future_set_exception(future, AskTimeout(text))


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


class _Sent(tuple[()]):
    """What `send` returns when the message went in at once: awaiting it ends at once. An
    empty tuple whose ``__await__`` is its C iterator, exhausted from the start: no Python
    frame runs per await (the hot path of a pipeline of async actors)."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __await__(self) -> Generator[Any, None, None]: ...

    else:
        __await__ = tuple.__iter__


SENT: Final = _Sent()


async def _put(
    channel: ThreadChannel, message: Message, full: Mailbox, deadline: float | None
) -> bool:
    """Deliver `message` to `full`, awaiting room while it is full; False at `deadline`."""
    loop = asyncio.get_running_loop()
    again: Mailbox | None = full
    while again is not None:
        register = functools.partial(channel.wait_room, again)
        cancel = functools.partial(channel.cancel_wait, again)
        if not await wait(loop, register, cancel, deadline):
            return False
        again = channel.offer(message)
    return True


def send(
    channel: ThreadChannel,
    recipient: str,
    payload: Any,
    sender: str,
    mtype: MessageType = MessageType.DATA,
    timeout: float | None = None,
) -> Awaitable[None]:
    """Send now if there is room (then awaiting the result ends at once); otherwise the
    result awaits room without blocking the loop, and raises `MailboxFull` after `timeout`
    (the message is not enqueued), as `send` does."""
    full = channel.offer_new(recipient, payload, sender, mtype)
    return SENT if full is None else send_when_room(channel, full, timeout)


async def send_when_room(channel: ThreadChannel, message: Message, timeout: float | None) -> None:
    """Await room for `message`, which found its mailbox full, and deliver it; `MailboxFull`
    after `timeout`."""
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    full = channel.offer(message)  # room may have come since
    if full is not None and not await _put(channel, message, full, deadline):
        text = f"mailbox {message.recipient!r} stayed full for {timeout}s"
        raise MailboxFull(text, message)


def ask(
    channel: ThreadChannel,
    recipient: str,
    payload: Any,
    sender: str,
    timeout: float,
    mtype: MessageType = _COMMAND,
) -> AskFuture:
    """Send a request from a running loop now (without waiting: a full mailbox is awaited
    by a task) and return the future of its reply's payload: `AskTimeout`, `ActorDead` or
    the handler's own exception as `ThreadChannel.ask` raises them. No coroutine and no
    task per ask: the future is the request's pending entry."""
    if type(payload) in _MUTABLE_TYPES:
        check_payload(payload)
    loop = asyncio.get_running_loop()
    future = AskFuture(loop=loop)
    future._bridge = bridge(loop)
    future._channel = channel
    future._sending = None
    future._token = stop_token.get()
    correlation_id = f"{sender}:{next(channel._correlation)}"
    message = future._request = new_message(mtype, sender, recipient, payload, correlation_id)
    deadline = loop.time() + timeout  # one deadline for the send and the reply
    future._expiry = loop.call_at(deadline, _expire, future, timeout)
    pending = channel._pending
    pending[correlation_id] = future
    try:
        full = channel.offer(message)
    except BaseException:
        pending.pop(correlation_id, None)
        future._expiry.cancel()
        raise
    if full is not None:
        future._sending = loop.create_task(
            _send_later(channel, future, full, deadline, timeout), name=f"ask {correlation_id}"
        )
    return future


async def _send_later(
    channel: ThreadChannel, future: AskFuture, full: Mailbox, deadline: float, timeout: float
) -> None:
    # The request found the mailbox full: await room until the ask's deadline.
    if not await _put(channel, future._request, full, deadline):
        _expire(future, timeout)
