"""Coroutine actors: `AsyncActor`, and the cell that runs one as a task on the system's loop.

Every async actor of a system runs on one event-loop thread (`LoopHost`, named
``<system>-aio``, non-daemon, started with the first async actor and joined by the system's
stop). Each actor is one task that takes one message at a time, in mailbox order, and awaits
its `handle` before it takes the next: `_AsyncCell` is the thread actor's `_Cell` with a
coroutine receive loop. Supervision (restart, backoff, escalation), statistics, the control
lane (stop, restart, ping), timers, pub/sub and dead letters are the thread cell's own code.

Waiting never blocks the loop: the mailbox wakes a waiting task as it wakes a blocked thread
(see `aio.py`). A stop reaches the task wherever it awaits: an immediate stop cancels it inside
`handle` (or `on_start`, or a backoff), and the message in hand becomes a `stopped` dead
letter. A handler that blocks the loop (a blocking call inside ``async def``) is seen by the
loop's heartbeat: `ActorStats.loop_blocked_seconds` names the actor holding it, and the
monitor flags it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Final

from . import aio, logctx
from .actor import _DRAINED, _STOPPED, Actor, ActorRef, _Cell, _Outcome
from .clock import SystemClock
from .errors import ActorStopping, MailboxClosed
from .message import ControlKind, Message, MessageType
from .stats import ActorState, ActorStats

__all__ = ["AsyncActor", "LoopHost", "is_async_factory"]

_log: Final = logging.getLogger("actord.actor")
_CONTROL: Final = MessageType.CONTROL
_now_ns: Final = time.monotonic_ns
HEARTBEAT: Final = 0.05  # seconds between two beats of the loop's heartbeat
# An async actor takes up to BATCH messages at a time (a thread actor 64): each batch costs
# a turn of the event loop, whose select lets the other threads take the GIL (every turn is
# a chance for a thread sender to refill a little and block again: a switch of threads and
# a wait for the OS to run this one again, costly on a busy machine). The others still get
# their turn after SLICE_NS of handling: the rest of a batch of slow handlers goes back to
# the front of the mailbox (where a control message is served before it), and the next
# batches are small until the handlers are fast again.
BATCH: Final = 256
SLICE_NS: Final = 1_000_000

# The cell whose task (or a task it created) runs now: log records and the heartbeat's
# blame read it.
_CELL: Final[contextvars.ContextVar[_AsyncCell | None]] = contextvars.ContextVar(
    "actord_cell", default=None
)


class AsyncActor(Actor):
    """An actor whose hooks are coroutines: ``async def handle(self, message)``. It runs on
    the system's event-loop thread, shared with every other async actor of the system, one
    message at a time, with the supervision, control lane, statistics, timers and pub/sub
    of a thread actor. Spawn it by its class (or a `functools.partial` of it).

    Await, never block: `ask_async` and `send_async` wait without holding the loop. The
    blocking helpers inherited from `Actor` (`ask`, `send` to a full mailbox) would stall
    every async actor of the system; `publish` is fine with ``timeout=0``.
    """

    _is_async: ClassVar[bool] = True

    async def on_start(self) -> None:  # type: ignore[override]
        """The loop, before the first message (and again after each restart)."""

    async def handle(self, message: Message) -> None:  # type: ignore[override]
        """The loop: handle one message. An exception crashes (and restarts) this actor."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    async def on_stop(self) -> None:  # type: ignore[override]
        """The loop, after the last message when the actor stops (not after a crash)."""

    async def on_failure(  # type: ignore[override]
        self, error: Exception, message: Message | None
    ) -> None:
        """The loop: this instance raised `error` and is about to be discarded."""

    def ask_async(
        self, recipient: str | ActorRef, payload: Any, *, timeout: float
    ) -> asyncio.Future[Any]:
        """``await`` the reply of `recipient` (a name or a ref) without blocking the loop."""
        name = recipient if isinstance(recipient, str) else recipient.name
        return aio.ask(self._channel, name, payload, self._name, timeout)

    def send_async(
        self,
        recipient: str | ActorRef,
        payload: Any,
        *,
        mtype: MessageType = MessageType.DATA,
        timeout: float | None = None,
    ) -> Awaitable[None]:
        """``await`` room in `recipient`'s mailbox (a name or a ref) and send."""
        name = recipient if isinstance(recipient, str) else recipient.name
        # `aio.send` inline: one call less per message on the async hot path.
        full = self._channel.offer_new(name, payload, self._name, mtype)
        return aio.SENT if full is None else aio.send_when_room(self._channel, full, timeout)


def is_async_factory(factory: Callable[[], Actor]) -> bool:
    """True for an `AsyncActor` class, or a `functools.partial` of one."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return isinstance(factory, type) and issubclass(factory, AsyncActor)


class _LoopContext:
    """Bound as the loop thread's logging context: the actor whose task runs now."""

    @property
    def member(self) -> str:
        cell = _CELL.get()
        return "-" if cell is None else cell.member

    @property
    def correlation_id(self) -> str | None:
        cell = _CELL.get()
        return None if cell is None else cell.correlation_id


class LoopHost:
    """The event-loop thread of one system's async actors."""

    def __init__(self, name: str, *, timeout: float = 10.0) -> None:
        self.loop = asyncio.new_event_loop()
        # typeshed's factory type lacks the `context` argument that create_task passes.
        self.loop.set_task_factory(self._task)  # type: ignore[arg-type]
        # Which async actor each task belongs to (its own, and those it created): written
        # and pruned on the loop thread; the heartbeat's reader on another thread does one
        # get, which is atomic.
        self._owners: weakref.WeakKeyDictionary[asyncio.Task[Any], _AsyncCell] = (
            weakref.WeakKeyDictionary()
        )
        self.native_id = 0  # the loop thread's, once it runs
        self._beat_ns = time.monotonic_ns()  # when the heartbeat last ran (loop writes)
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=False)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the event loop thread {name} did not start")

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self.native_id = threading.get_native_id()
        logctx.bind(_LoopContext())
        loop.call_soon(self._beat)
        self._ready.set()
        try:
            loop.run_forever()
            # Stopped by the system once every actor has ended: what is left (a task an
            # actor started and never awaited) is cancelled and given one turn to end.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            logctx.bind(None)

    def _task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        # The loop's task factory: a task an actor creates is that actor's, for the blame.
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
        cell = (context or contextvars.copy_context()).get(_CELL)
        if cell is not None:
            self._owners[task] = cell
        return task

    def _beat(self) -> None:
        self._beat_ns = time.monotonic_ns()
        self.loop.call_later(HEARTBEAT, self._beat)

    def own(self, task: asyncio.Task[Any], cell: _AsyncCell) -> None:
        self._owners[task] = cell

    def on_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Any thread: run ``fn(*args)`` on the loop soon; False if the loop has closed."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    def blocked_by(self, cell: _AsyncCell) -> float:
        """Any thread: how long `cell` has held the loop past a heartbeat (0 if it does not
        hold it now). The task running now is read from asyncio's table of current tasks."""
        lag = (time.monotonic_ns() - self._beat_ns) / 1e9 - HEARTBEAT
        if lag <= 0:
            return 0.0
        task = asyncio.current_task(self.loop)
        return lag if task is not None and self._owners.get(task) is cell else 0.0

    def stop(self, timeout: float) -> bool:
        """Stop the loop and join its thread; False if it is still running (held by a
        handler that blocks)."""
        if self.on_loop():  # an actor stopping the system: the loop ends after this step
            self.loop.stop()
            return True
        self.call(self.loop.stop)
        self.thread.join(timeout)
        return not self.thread.is_alive()


class _TaskThread(threading.Thread):
    """What the system joins for an async cell: its task, seen as a thread (`start`,
    `join`, `is_alive`); never started as an OS thread."""

    def __init__(self, cell: _AsyncCell) -> None:
        super().__init__(name=f"actord:{cell.member}", daemon=False)
        self._cell = cell
        self.ended = threading.Event()  # set by the task as its very last act
        self._begun = False

    def start(self) -> None:
        self._begun = True
        if not self._cell._host.call(self._cell._spawn):
            self._cell._never_ran()

    def join(self, timeout: float | None = None) -> None:
        if self._begun and not self._cell._host.on_loop():  # the loop cannot wait for itself
            self.ended.wait(timeout)

    def is_alive(self) -> bool:
        return self._begun and not self.ended.is_set()


class _AsyncCell(_Cell):
    """One task running one async actor instance at a time on a (possibly shared) mailbox:
    `_Cell._run` and `_Cell._serve`, awaiting."""

    _is_async: ClassVar[bool] = True
    __slots__ = ("_host", "_task", "_waiting")

    def __init__(self, *, host: LoopHost, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._host = host
        self._task: asyncio.Task[None] | None = None
        # What a stop may cancel the task in (loop thread only): "handle" (on_start too),
        # "backoff", or None between them (the stop's control message ends the rest).
        self._waiting: str | None = None
        self.thread = _TaskThread(self)

    # -- any thread ------------------------------------------------------------------------

    def stats(self, role: str | None = None) -> ActorStats:
        depth, capacity = self._inbox.size()
        return ActorStats._capture(
            self.member,
            self.mailbox,
            self.counters,
            depth,
            capacity,
            role,
            self.commands,
            self._host.blocked_by(self),
        )

    def interrupt(self) -> None:
        super().interrupt()
        self._host.call(self._cancel, False)

    def end_backoff(self) -> None:
        super().end_backoff()
        self._host.call(self._cancel, True)

    # -- the loop --------------------------------------------------------------------------

    def _cancel(self, backoff_only: bool) -> None:
        # Runs between steps: `_waiting` says where the task is suspended now.
        task, waiting = self._task, self._waiting
        if task is None or waiting is None or (backoff_only and waiting != "backoff"):
            return
        task.cancel()

    def _spawn(self) -> None:
        self._task = self._host.loop.create_task(self._main(), name=self.thread.name)

    def _never_ran(self) -> None:
        # The loop closed before the task could start (the system is stopping).
        self.counters.state = ActorState.STOPPED
        try:
            self._inbox.leave()
            self._on_exit(self)
        finally:
            assert isinstance(self.thread, _TaskThread)
            self.thread.ended.set()

    def _stopped_by_cancel(self) -> bool:
        # A CancelledError: our task's stop (cancel requested on it), or one raised inside
        # the handler by something it awaited (a failure, not a stop).
        task = self._task
        if task is not None and task.cancelling():
            task.uncancel()
            return True
        return False

    async def _main(self) -> None:
        _CELL.set(self)
        aio.stop_token.set(self.token)
        task = asyncio.current_task()
        assert task is not None
        self._host.own(task, self)
        counters = self.counters
        counters.native_thread_id = self._host.native_id
        try:
            actor = await self._start_instance_async()
            while actor is not None:
                counters.state = ActorState.RUNNING
                outcome = await self._serve_async(actor)
                if outcome.stop_kind is ControlKind.RESTART:
                    if self._stopping():
                        _log.info("not restarting actor %s: it is stopping", self.member)
                        continue
                    _log.info("restarting actor %s on request", self.member)
                    await self._final_hook_async(actor.on_stop, "on_stop")
                    self._cancel_timers(actor)
                    counters.restarts += 1
                    actor = await self._start_instance_async()
                    continue
                if outcome.error is None:
                    counters.state = ActorState.STOPPING
                    await self._final_hook_async(actor.on_stop, "on_stop")
                    self._cancel_timers(actor)
                    self.retired = outcome.stop_kind is ControlKind.RETIRE
                    return
                await self._failed_async(actor, outcome.error, outcome.message)
                if not await self._restart_after_backoff_async(outcome.error):
                    return
                actor = await self._start_instance_async()
        finally:
            if counters.state is not ActorState.FAILED:
                counters.state = ActorState.STOPPED
            self.current = None
            self.hook = None
            try:
                self._inbox.leave()
                self._on_exit(self)
            finally:
                assert isinstance(self.thread, _TaskThread)
                self.thread.ended.set()

    async def _start_instance_async(self) -> AsyncActor | None:
        while not self.token.stopping:
            actor: AsyncActor | None = None
            try:
                made = self._make()
                assert isinstance(made, AsyncActor)
                actor = made
                self._enter("on_start")
                self._waiting = "handle"
                try:
                    await actor.on_start()
                finally:
                    self._waiting = None
                self._leave()
            except asyncio.CancelledError:
                self._leave()
                if not self._stopped_by_cancel():
                    raise
                _log.info("actor %s stopped while starting", self.member)
                if actor is not None:
                    await self._failed_async(actor, ActorStopping(f"{self.member} stopped"), None)
                return None
            except Exception as error:
                self._leave()
                if self._is_stop(error):
                    _log.info("actor %s stopped while starting", self.member)
                    if actor is not None:
                        await self._failed_async(actor, error, None)
                    return None
                _log.exception("actor %s failed to start", self.member)
                self.counters.errors += 1
                if actor is not None:
                    await self._failed_async(actor, error, None)
                if not await self._restart_after_backoff_async(error):
                    return None
                continue
            return actor
        return None

    async def _restart_after_backoff_async(self, error: Exception) -> bool:
        delay = self._restart_delay(error)
        if delay is None:
            return False
        if isinstance(self._clock, SystemClock):
            if delay > 0 and not self._backoff.is_set():
                self._waiting = "backoff"
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    if not self._stopped_by_cancel():
                        raise
                finally:
                    self._waiting = None
            interrupted = self._backoff.is_set()
        else:
            interrupted = self._clock.sleep(delay, self._backoff)  # a test's clock: no wait
        if interrupted or self._stopping():
            return False
        self.counters.restarts += 1
        return True

    async def _receive(
        self, batch_size: int, loop: asyncio.AbstractEventLoop
    ) -> list[Message] | _Outcome:
        # The next batch of data, or how serving ends (a control message, or drained).
        inbox = self._inbox
        while True:
            try:
                batch = inbox.poll(batch_size)
            except MailboxClosed:
                return _DRAINED
            if not batch:
                await aio.wait(loop, inbox.wait, inbox.cancel_wait, None)
            elif batch[0].type is not _CONTROL:
                return batch
            else:
                kind = self._control(batch[0])
                if kind is not None:
                    return _Outcome(stop_kind=kind)

    async def _serve_async(self, actor: AsyncActor) -> _Outcome:
        # `_Cell._serve`, awaiting: the same statistics, batches and failure boundary.
        loop = asyncio.get_running_loop()
        receive = self._receive
        batch_size = self._batch
        handle = actor.handle
        counters = self.counters
        by_type = counters.by_type
        handle_hist = counters.handle_hist
        wait_hist = counters.wait_hist
        now = _now_ns
        token = self.token
        slice_ns = SLICE_NS
        size = batch_size
        while True:
            batch = await receive(size, loop)
            if isinstance(batch, _Outcome):
                return batch
            end = now()
            wait_total = handle_total = 0
            # The task suspends inside this loop only in `handle`: a stop may cancel it
            # anywhere in the batch (set once per batch, not per message).
            self._waiting = "handle"
            try:
                for message in batch:
                    if token.stopping:
                        self._requeue_from(batch, message, inclusive=True)
                        return _STOPPED
                    start = end
                    wait = start - message.sent_ns
                    wait_hist[wait.bit_length()] += 1
                    wait_total += wait
                    self.current = message
                    counters.busy_since_ns = start
                    try:
                        await handle(message)
                    except (Exception, asyncio.CancelledError) as raised:
                        self._waiting = None
                        self._flush(wait_total, handle_total)
                        return self._raised(raised, batch, message)
                    end = now()
                    elapsed = end - start
                    handle_hist[elapsed.bit_length()] += 1
                    handle_total += elapsed
                    by_type[message.type] += 1
                    if handle_total > slice_ns:  # slow handlers: the others get their turn
                        self._requeue_from(batch, message, inclusive=False)
                        break
            finally:
                self._waiting = None
            self._flush(wait_total, handle_total)
            # After a slow batch the next takes one message, then twice as many each time
            # while they stay fast: slow handlers seldom put anything back.
            size = 1 if handle_total > slice_ns else min(2 * size, batch_size)
            # One turn of the loop per batch (or slice): an actor with a full mailbox never
            # keeps the other actors, timers and I/O of the loop waiting.
            await asyncio.sleep(0)

    def _flush(self, wait_total: int, handle_total: int) -> None:
        # A batch (or its part) is over: its duration sums go to the statistics.
        counters = self.counters
        counters.wait_ns += wait_total
        counters.handle_ns += handle_total
        counters.busy_since_ns = 0
        self.current = None

    def _raised(
        self, raised: Exception | asyncio.CancelledError, batch: list[Message], message: Message
    ) -> _Outcome:
        # `handle` raised on `message`: a stop (the message goes back, to become a dead
        # letter), or a failure (dead-lettered with its error; the rest goes back).
        error: Exception
        if isinstance(raised, asyncio.CancelledError):
            if self._stopped_by_cancel():
                _log.info("actor %s stopped while awaiting in handle()", self.member)
                self._requeue_from(batch, message, inclusive=True)
                return _STOPPED
            error = RuntimeError(f"handle() raised CancelledError: {raised}")
        else:
            error = raised
        if self._is_stop(error):
            _log.info("actor %s stopped inside handle(): %s", self.member, error)
            self._requeue_from(batch, message, inclusive=True)
            return _STOPPED
        self._handler_raised(message, error)
        self._requeue_from(batch, message, inclusive=False)
        return _Outcome(error=error, message=message)

    async def _failed_async(
        self, actor: AsyncActor, error: Exception, message: Message | None
    ) -> None:
        await self._final_hook_async(actor.on_failure, "on_failure", error, message)
        self._cancel_timers(actor)

    async def _final_hook_async(
        self, hook: Callable[..., Coroutine[Any, Any, None]], name: str, *args: object
    ) -> None:
        # on_stop / on_failure run to their end: a stop never cancels them.
        self._enter(name)
        try:
            await hook(*args)
        except Exception as error:
            if self._is_stop(error):
                _log.warning("%s of %s cut short: %s", name, self.member, error)
            else:
                _log.exception("%s of %s raised", name, self.member)
                self.counters.errors += 1
        finally:
            self._leave()
