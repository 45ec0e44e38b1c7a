"""Actors: the `Actor` base class (hooks only), the shareable `ActorRef`, and the receive loop.

The receive loop (`_Cell`) is the one failure boundary of the runtime: it alone catches
`Exception`, logs it with its traceback, dead-letters the message that raised and asks the
supervisor whether to restart or escalate.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from . import aio, interrupt, logctx
from .channel import Inbox, ThreadChannel
from .clock import Clock
from .errors import ActorStopping, ChannelClosed, MailboxClosed, MailboxFull
from .interrupt import StopToken
from .message import Control, ControlKind, Message, MessageType, Pong
from .stats import ActorState, ActorStats, _Counters
from .supervisor import Escalation, Supervisor

if TYPE_CHECKING:
    import asyncio

    from .timers import Timer

__all__ = ["Actor", "ActorRef"]

_log: Final = logging.getLogger("actord.actor")
_CONTROL: Final = MessageType.CONTROL
_now_ns: Final = time.monotonic_ns


class Actor:
    """Subclass this and implement `handle`. Every hook runs on the actor's own thread
    (named ``actord:<member>``), one message at a time; an actor never needs a lock for its
    own state. Other code holds an `ActorRef`, never the actor object.

    The runtime binds `name`, `member` and the helpers before `on_start`; they are not yet
    available in `__init__`.
    """

    # The operator's commands (`AdminCommand.command`, sent with ``actorctl send ACTOR
    # command NAME``) that `handle` carries out. The control socket refuses any other before
    # it is delivered: an actor that treats every message as work would crash on one.
    # ``actorctl actors`` lists them. Declare them on the class, for example
    # ``commands: ClassVar[frozenset[str]] = frozenset({"flush"})``.
    commands: ClassVar[frozenset[str]] = frozenset()
    _is_async: ClassVar[bool] = False  # True for an AsyncActor: runs on the system's loop

    _channel: ThreadChannel
    _name: str
    _member: str
    _ref: ActorRef
    _token: StopToken
    _own_lane: Callable[..., None]  # its cell's `tell`: this member's own lane
    _yield_turn: Callable[[Message], bool]  # its inbox's `yield_turn`
    _timers: list[Timer]  # scheduled by this instance: cancelled when it ends
    _timers_kept: int  # how many were live at the last pruning

    @property
    def name(self) -> str:
        """The address others send to (the pool's name for a pool member)."""
        return self._name

    @property
    def member(self) -> str:
        """This member's own name: ``name`` for a single actor, ``name#i`` in a pool."""
        return self._member

    @property
    def ref(self) -> ActorRef:
        return self._ref

    @property
    def backlog(self) -> int:
        """Data messages waiting in this actor's mailbox now (for a pool member: the pool's
        shared queue). A member with work in flight can tell whether more is coming."""
        return self._channel.size(self._name)[0]

    @property
    def stop_requested(self) -> bool:
        """True once an immediate stop was asked for: a long `handle` can check it and return
        early (the runtime interrupts only its own waits: a send, an ask, a receive)."""
        return self._token.stopping

    # -- hooks -----------------------------------------------------------------------------

    def on_start(self) -> None:
        """Actor thread, before the first message (and again after each restart)."""

    def handle(self, message: Message) -> None:
        """Actor thread: handle one message. An exception crashes (and restarts) this actor."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    def on_stop(self) -> None:
        """Actor thread, after the last message when the actor stops (not after a crash).
        What it sends and cannot be delivered any more becomes a dead letter, not an error."""

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: this instance raised `error` (on `message`, or in `on_start` when
        None) and is about to be discarded; a fresh instance may replace it (never once the
        actor or the system is stopping). Sends behave as in `on_stop`."""

    # -- helpers, for use from the hooks ---------------------------------------------------

    def send(
        self,
        recipient: str,
        payload: Any,
        *,
        mtype: MessageType = MessageType.DATA,
        timeout: float | None = None,
    ) -> None:
        """Send to `recipient`, blocking while its mailbox is full (see `ThreadChannel.send`)."""
        self._channel.deliver(recipient, payload, self._name, mtype, None, timeout)

    def tell_self(self, payload: Any) -> bool:
        """Any thread: a DATA message that only this member takes (its own lane, served
        before what its pool has queued): how a callback on another thread wakes it. Never
        blocks: False if as many messages already wait for it as its mailbox holds (it will
        run anyway) or the channel has closed; once it has stopped, a dead letter."""
        try:
            self._own_lane(payload, mtype=MessageType.DATA, sender=self._member)
        except (MailboxFull, ChannelClosed):
            return False
        return True

    def yield_turn(self, message: Message) -> bool:
        """For a member of a fair pool (`ActorSystem.spawn_pool(fair=True)`), while it
        handles `message`: True if the pool took this member's turn back for another key's
        waiting messages (its key holds more members than its share). `message` is then
        queued again, first of its key, and the handler must drop its work on it and return.
        Call it now and then from long, restartable work; always False in a plain pool."""
        return self._yield_turn(message)

    def reply(self, message: Message, payload: Any) -> None:
        """Answer a request (`ask`/`request`) with `payload`."""
        self._channel.reply(message, payload, sender=self._name)

    def publish(self, payload: Any, *, timeout: float | None = None) -> int:
        """Send `payload` as an EVENT to every subscriber of this actor."""
        return self._channel.publish(self._name, payload, timeout=timeout)

    def request(self, recipient: str, payload: Any, *, timeout: float | None = None) -> Future[Any]:
        """Send a request; the future resolves with the reply's payload."""
        return self._channel.request(recipient, payload, sender=self._name, timeout=timeout)

    def ask(self, recipient: str, payload: Any, *, timeout: float) -> Any:
        """Send a request and block this actor until the reply's payload arrives."""
        return self._channel.ask(recipient, payload, sender=self._name, timeout=timeout)

    def schedule(
        self,
        delay: float,
        payload: Any,
        *,
        recipient: str | None = None,
        interval: float | None = None,
    ) -> Timer:
        """Deliver `payload` to `recipient` (default: this actor) after `delay` seconds, then
        every `interval` seconds if given. Cancel with the returned timer's `cancel()`; the
        runtime cancels it when this instance ends (a stop, a restart, a failure), so it
        never reaches a successor that reuses the name."""
        timer = schedule_message(
            self._channel, self._name, recipient or self._name, payload, delay, interval
        )
        timers = self._timers
        if len(timers) >= 2 * self._timers_kept:  # drop the ones done, now and then
            timers[:] = [t for t in timers if t.active]
            self._timers_kept = max(8, len(timers))
        timers.append(timer)
        return timer


def schedule_message(
    channel: ThreadChannel,
    sender: str,
    recipient: str,
    payload: Any,
    delay: float,
    interval: float | None,
) -> Timer:
    """Schedule a DATA message on the channel's timer thread. A tick that finds the mailbox
    full becomes a dead letter (MAILBOX_FULL); the timer stops once the channel closes."""
    timer: Timer | None = None

    def fire() -> None:
        # Timer thread: never block it, never let the channel's closing escape into it.
        try:
            channel.try_post(Message(MessageType.DATA, sender, recipient, payload))
        except ChannelClosed:
            if timer is not None:
                timer.cancel()

    timer = channel.timers.call_later(delay, fire, interval)
    return timer


class _Group(Protocol):
    """What a ref needs from the system's record of an actor or pool."""

    @property
    def alive(self) -> bool: ...

    def stop(self, *, graceful: bool, timeout: float, wait: bool = True) -> None: ...

    def stats(self) -> tuple[ActorStats, ...]: ...


class ActorRef:
    """A shareable handle on an actor or pool: `tell`, `ask`, `stop`. Safe from any thread."""

    __slots__ = ("_channel", "_group", "name")

    def __init__(self, name: str, channel: ThreadChannel, group: _Group) -> None:
        self.name = name
        self._channel = channel
        self._group = group

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r}, alive={self.alive})"

    @property
    def alive(self) -> bool:
        return self._group.alive

    def tell(
        self,
        payload: Any,
        *,
        mtype: MessageType = MessageType.DATA,
        sender: str = "$ref",
        timeout: float | None = None,
    ) -> None:
        """Send without waiting for an answer (blocks only while the mailbox is full)."""
        self._channel.deliver(self.name, payload, sender, mtype, None, timeout)

    def ask(self, payload: Any, *, timeout: float = 5.0, sender: str = "$ask") -> Any:
        """Send a request and return the reply's payload.

        Raises `AskTimeout` after `timeout`, `ActorDead` if the actor is stopped, or the
        handler's own exception if it raised.
        """
        return self._channel.ask(self.name, payload, sender=sender, timeout=timeout)

    def ask_future(
        self, payload: Any, *, timeout: float | None = None, sender: str = "$ask"
    ) -> Future[Any]:
        return self._channel.request(self.name, payload, sender=sender, timeout=timeout)

    def ask_async(
        self, payload: Any, *, timeout: float = 5.0, sender: str = "$ask"
    ) -> asyncio.Future[Any]:
        """From a running event loop: sends the request now and returns an asyncio future
        of the reply's payload (``await`` it): `ask` without blocking the loop and without
        a thread. Same errors as `ask`; cancelling the future (or the task awaiting it)
        withdraws the request (a reply that comes later is a `late_reply` dead letter)."""
        return aio.ask(self._channel, self.name, payload, sender, timeout)

    def send_async(
        self,
        payload: Any,
        *,
        mtype: MessageType = MessageType.DATA,
        sender: str = "$ref",
        timeout: float | None = None,
    ) -> Awaitable[None]:
        """``await`` it from any running event loop: `tell`, awaiting room while the mailbox
        is full without blocking the loop; `MailboxFull` after `timeout`. Sent at once when
        there is room (awaiting then ends at once)."""
        return aio.send(self._channel, self.name, payload, sender, mtype, timeout)

    def ping(self, *, timeout: float = 5.0) -> Pong:
        """Ask the receive loop itself (control lane) whether it is turning."""
        result: Pong = self._channel.ask_control(self.name, ControlKind.PING, timeout=timeout)
        return result

    def stop(self, *, graceful: bool = True, timeout: float = 10.0, wait: bool = True) -> None:
        """Stop and join. Graceful drains what is queued until `timeout`, then stops at once;
        immediate turns what is queued into dead letters. Raises `StopTimeout` if a thread is
        still stuck in `handle` after the deadline.

        `wait=False` only starts the stop (for an actor stopping another one without blocking
        on it); the actor's name is released when its last thread exits. An actor stopping
        itself never waits."""
        self._group.stop(graceful=graceful, timeout=timeout, wait=wait)

    def stats(self) -> tuple[ActorStats, ...]:
        """A snapshot per member (one for a single actor)."""
        return self._group.stats()


class _Outcome:
    __slots__ = ("error", "message", "stop_kind")

    def __init__(
        self,
        stop_kind: ControlKind | None = None,
        error: Exception | None = None,
        message: Message | None = None,
    ) -> None:
        self.stop_kind = stop_kind
        self.error = error
        self.message = message


_DRAINED: Final = _Outcome()
_STOPPED: Final = _Outcome(stop_kind=ControlKind.STOP)


class _Cell:
    """One thread running one actor instance at a time on a (possibly shared) mailbox."""

    _is_async: ClassVar[bool] = False  # the kind of actor it runs (see `_make`)

    __slots__ = (
        "_backoff",
        "_batch",
        "_channel",
        "_clock",
        "_factory",
        "_inbox",
        "_on_escalate",
        "_on_exit",
        "_ref",
        "_stopping",
        "_supervisor",
        "commands",
        "counters",
        "current",
        "hook",
        "made",
        "mailbox",
        "member",
        "retired",
        "thread",
        "token",
    )

    def __init__(
        self,
        *,
        inbox: Inbox,
        mailbox: str,
        member: str,
        channel: ThreadChannel,
        factory: Callable[[], Actor],
        ref: ActorRef,
        supervisor: Supervisor,
        clock: Clock,
        batch: int,
        stopping: Callable[[], bool],
        on_escalate: Callable[[Escalation], None],
        on_exit: Callable[[_Cell], None],
    ) -> None:
        self._inbox = inbox
        self.mailbox = mailbox
        self.member = member
        self._channel = channel
        self._factory = factory
        self._ref = ref
        self._supervisor = supervisor
        self._clock = clock
        self._batch = batch
        self._stopping = stopping  # True once the actor's group or the system is stopping
        self._on_escalate = on_escalate
        self._on_exit = on_exit
        self.counters = _Counters()
        # The admin commands of the instance last made, and set once the first one is made
        # (before that, which commands the factory's actor accepts is not known).
        self.commands: frozenset[str] = frozenset()
        self.made = threading.Event()
        self.retired = False  # left a shrinking pool (set on its own thread as it exits)
        # The message in hand (read by the log record factory on this thread).
        self.current: Message | None = None
        # The hook running now, if any ("on_start", "on_stop", ...): names a stuck thread.
        self.hook: str | None = None
        # Set by any stop, graceful too: ends a backoff wait (no restart once stopping).
        self._backoff = threading.Event()
        # Tripped by an immediate stop: ends a send, ask or receive this thread is blocked in.
        # Its `stopping` (a plain bool) is also the actor's `stop_requested`, and is read
        # before each message of a batch in hand, so a stop never waits for a whole batch.
        self.token = StopToken(member)
        self.thread = threading.Thread(target=self._run, name=f"actord:{member}", daemon=False)

    @property
    def correlation_id(self) -> str | None:
        current = self.current
        return None if current is None else current.correlation_id

    def stats(self, role: str | None = None) -> ActorStats:
        depth, capacity = self._inbox.size()
        return ActorStats._capture(
            self.member, self.mailbox, self.counters, depth, capacity, role, self.commands
        )

    def interrupt(self) -> None:
        """Any thread: stop this member now, wherever the runtime has it blocked."""
        self._backoff.set()
        self.token.trip()
        self._inbox.control(ControlKind.STOP)

    def control(self, kind: ControlKind) -> None:
        """Any thread: a control request for this member alone (a restart, say)."""
        self._inbox.control(kind)

    def tell(self, payload: Any, *, mtype: MessageType, sender: str) -> None:
        """Any thread: a message for this member alone (see `Inbox.tell`)."""
        self._inbox.tell(payload, sender=sender, mtype=mtype)

    def end_backoff(self) -> None:
        """Any thread, as a stop begins: a member waiting to restart gives up at once."""
        self._backoff.set()

    def doing(self) -> str:
        """What the thread is busy with (for a stop that timed out)."""
        current, hook = self.current, self.hook
        if current is not None:
            kind = type(current.payload).__name__
            return f"{self.member} (handling {kind} {current.type.name} from {current.sender})"
        return f"{self.member} (in {hook})" if hook else f"{self.member} (between messages)"

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        logctx.bind(self)
        interrupt.bind(self.token)
        counters = self.counters
        counters.native_thread_id = threading.get_native_id()
        try:
            actor = self._start_instance()
            while actor is not None:
                counters.state = ActorState.RUNNING
                outcome = self._serve(actor)
                if outcome.stop_kind is ControlKind.RESTART:
                    if self._stopping():  # asked for before the stop began: the stop wins
                        _log.info("not restarting actor %s: it is stopping", self.member)
                        continue
                    _log.info("restarting actor %s on request", self.member)
                    self._stop_instance(actor)
                    counters.restarts += 1
                    actor = self._start_instance()
                    continue
                if outcome.error is None:
                    counters.state = ActorState.STOPPING
                    self._stop_instance(actor)
                    self.retired = outcome.stop_kind is ControlKind.RETIRE
                    return
                self._failed(actor, outcome.error, outcome.message)
                if not self._restart_after_backoff(outcome.error):
                    return
                actor = self._start_instance()
        finally:
            usage = resource.getrusage(resource.RUSAGE_THREAD)  # this thread's own CPU
            counters.cpu_at_exit = (usage.ru_utime, usage.ru_stime)
            if counters.state is not ActorState.FAILED:
                counters.state = ActorState.STOPPED
            self.current = None
            self.hook = None
            interrupt.bind(None)
            self._inbox.leave()  # what waits for this member alone: dead letters, not lost
            logctx.bind(None)
            self._on_exit(self)

    def _start_instance(self) -> Actor | None:
        # Build and start a fresh instance; a failure here is supervised like one in handle.
        while not self.token.stopping:
            actor: Actor | None = None
            try:
                actor = self._make()
                self._enter("on_start")
                actor.on_start()
                self._leave()
            except Exception as error:
                self._leave()
                if self._is_stop(error):
                    _log.info("actor %s stopped while starting", self.member)
                    if actor is not None:
                        self._failed(actor, error, None)
                    return None
                _log.exception("actor %s failed to start", self.member)
                self.counters.errors += 1
                if actor is not None:
                    self._failed(actor, error, None)
                if not self._restart_after_backoff(error):
                    return None
                continue
            return actor
        return None

    def _make(self) -> Actor:
        # A fresh instance from the factory, bound to this cell (before its on_start).
        actor = self._factory()
        if getattr(actor, "_is_async", False) is not self._is_async:
            kind = "an AsyncActor" if self._is_async else "a thread Actor"
            raise TypeError(
                f"{self.member}: the factory made {type(actor).__name__}, not {kind}; spawn an "
                "AsyncActor by its class (or a functools.partial of it)"
            )
        self.commands = frozenset(actor.commands)
        self.made.set()
        actor._channel = self._channel
        actor._name = self.mailbox
        actor._member = self.member
        actor._ref = self._ref
        actor._token = self.token
        actor._own_lane = self.tell
        actor._yield_turn = self._inbox.yield_turn
        actor._timers = []
        actor._timers_kept = 8
        return actor

    def _is_stop(self, error: Exception) -> bool:
        # A wait the stop cut short, or the channel closed under a stopping system: a stop.
        return isinstance(error, ActorStopping) or (
            isinstance(error, ChannelClosed) and self._channel.closed
        )

    def _enter(self, hook: str) -> None:
        self.hook = hook
        self.counters.busy_since_ns = _now_ns()  # a hung hook counts as stuck

    def _leave(self) -> None:
        self.hook = None
        self.counters.busy_since_ns = 0

    def _restart_after_backoff(self, error: Exception) -> bool:
        delay = self._restart_delay(error)
        if delay is None:
            return False
        if self._clock.sleep(delay, self._backoff) or self._stopping():
            return False
        self.counters.restarts += 1
        return True

    def _restart_delay(self, error: Exception) -> float | None:
        # The supervisor's decision: the backoff before a restart, or None (stopping, or
        # escalated: the escalation is reported here).
        if self.token.stopping or self._stopping():
            # Stopping: neither a restart nor an escalation, however it failed.
            _log.info("actor %s failed while stopping: not restarted", self.member)
            return None
        decision = self._supervisor.record_failure()
        if decision.escalate:
            self.counters.state = ActorState.FAILED
            _log.critical(
                "actor %s failed %d times within %.1fs: escalating",
                self.member,
                decision.failures_in_period,
                self._supervisor.policy.period,
            )
            self._on_escalate(
                Escalation(
                    self.mailbox, error, decision.failures_in_period, self._supervisor.policy.period
                )
            )
            return None
        self.counters.state = ActorState.RESTARTING
        _log.warning("restarting actor %s in %.3fs", self.member, decision.delay)
        return decision.delay

    def _serve(self, actor: Actor) -> _Outcome:
        # The hot loop: locals for everything it touches per message.
        receive = self._inbox.receive
        batch_size = self._batch
        handle = actor.handle
        counters = self.counters
        by_type = counters.by_type
        handle_hist = counters.handle_hist
        wait_hist = counters.wait_hist
        now = _now_ns
        token = self.token
        while True:
            try:
                batch = receive(batch_size)
            except MailboxClosed:
                return _DRAINED
            except ActorStopping:
                return _STOPPED
            if batch[0].type is _CONTROL:  # the control lane hands out one message at a time
                kind = self._control(batch[0])
                if kind is not None:
                    return _Outcome(stop_kind=kind)
                continue
            # One clock read per message: each message starts when the previous one ended.
            # Duration sums are flushed once per batch; histograms and counts per message.
            end = now()
            wait_total = handle_total = 0
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
                    handle(message)
                except Exception as error:
                    counters.wait_ns += wait_total
                    counters.handle_ns += handle_total
                    counters.busy_since_ns = 0
                    self.current = None
                    if self._is_stop(error):
                        # Cut short by the stop: the message was not handled; it goes back
                        # with the rest (a dead letter, or the next member's).
                        _log.info("actor %s stopped inside handle(): %s", self.member, error)
                        self._requeue_from(batch, message, inclusive=True)
                        return _STOPPED
                    self._handler_raised(message, error)
                    self._requeue_from(batch, message, inclusive=False)
                    return _Outcome(error=error, message=message)
                end = now()
                elapsed = end - start
                handle_hist[elapsed.bit_length()] += 1
                handle_total += elapsed
                by_type[message.type] += 1
            counters.wait_ns += wait_total
            counters.handle_ns += handle_total
            # Idle again: cleared once per batch, not per message (the next one overwrites).
            counters.busy_since_ns = 0
            self.current = None

    def _requeue_from(self, batch: list[Message], message: Message, *, inclusive: bool) -> None:
        # Messages taken in a batch but not handled go back to the front of the mailbox: for
        # the next instance after a failure, or to become dead letters after a stop.
        index = next(i for i, m in enumerate(batch) if m is message)
        rest = batch[index if inclusive else index + 1 :]
        if rest:
            self._inbox.requeue(rest)

    def _control(self, message: Message) -> ControlKind | None:
        payload = message.payload
        if not isinstance(payload, Control):
            _log.error("ignoring malformed control message %r", message)
            return None
        self.counters.by_type[_CONTROL] += 1
        if payload.kind is ControlKind.PING:
            if message.correlation_id is not None:
                self._channel.reply(
                    message,
                    Pong(self.member, self.counters.native_thread_id),
                    sender=self.mailbox,
                )
            return None
        return payload.kind

    def _handler_raised(self, message: Message, error: Exception) -> None:
        _log.exception(
            "actor %s failed on %s message %d from %s",
            self.member,
            message.type.name,
            message.id,
            message.sender,
        )
        self.counters.errors += 1
        self._channel.fail(message, error)

    def _failed(self, actor: Actor, error: Exception, message: Message | None) -> None:
        self._final_hook(actor.on_failure, "on_failure", error, message)
        self._cancel_timers(actor)

    def _stop_instance(self, actor: Actor) -> None:
        self._final_hook(actor.on_stop, "on_stop")
        self._cancel_timers(actor)

    @staticmethod
    def _cancel_timers(actor: Actor) -> None:
        # The instance is gone: what it scheduled goes with it.
        for timer in getattr(actor, "_timers", ()):
            timer.cancel()

    def _final_hook(self, hook: Callable[..., None], name: str, *args: object) -> None:
        # on_stop / on_failure: what they send and cannot deliver becomes a dead letter.
        token = self.token
        token.final = True
        self._enter(name)
        try:
            hook(*args)
        except Exception as error:
            if self._is_stop(error):  # an ask cut short by the stop: said in one line
                _log.warning("%s of %s cut short: %s", name, self.member, error)
            else:
                _log.exception("%s of %s raised", name, self.member)
                self.counters.errors += 1
        finally:
            token.final = False
            self._leave()
