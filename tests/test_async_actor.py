"""Coroutine actors on the system's event-loop thread: order, supervision, the control lane,
stops that reach an awaiting handler, timers, pub/sub, statistics and the monitor."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from actord import (
    Actor,
    ActorState,
    ActorSystem,
    AsyncActor,
    BadPayload,
    DeadLetterReason,
    Message,
    MessageType,
    RestartPolicy,
)
from actord.daemon.health import GetSample, Monitor, MonitorSample
from actord.runtime.async_actor import BATCH, HEARTBEAT, SLICE_NS
from actord.runtime.channel import Inbox

from .conftest import WAIT, Recorder, RecordingActor


@pytest.fixture
def asys() -> Iterator[ActorSystem]:
    system = ActorSystem(
        "asys", default_policy=RestartPolicy(max_restarts=100, backoff_initial=0.0)
    )
    try:
        yield system
    finally:
        system.stop(timeout=WAIT)
    assert not any(t.name == "asys-aio" for t in threading.enumerate())  # joined at stop


class Log(AsyncActor):
    """Records what it handles, awaiting between receipt and record (order must hold)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def handle(self, message: Message) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.recorder.add(self.member, message)
        if message.correlation_id is not None:
            self.reply(message, message.payload)


class Flaky(AsyncActor):
    """Fails, after an await, on "boom"; counts its starts and stops."""

    starts = 0
    stops = 0

    async def on_start(self) -> None:
        type(self).starts += 1

    async def handle(self, message: Message) -> None:
        await asyncio.sleep(0)
        if message.payload == "boom":
            raise RuntimeError("boom")
        if message.correlation_id is not None:
            self.reply(message, ("ok", message.payload))

    async def on_stop(self) -> None:
        type(self).stops += 1


class Waiter(AsyncActor):
    """Awaits, inside handle, a future nobody completes, or a thread actor's reply."""

    def __init__(self, entered: threading.Event, stopped: threading.Event) -> None:
        self.entered = entered
        self.stopped = stopped

    async def handle(self, message: Message) -> None:
        self.entered.set()
        if message.payload == "ask":
            await self.ask_async("silent", "never answered", timeout=60)
        else:
            await asyncio.get_running_loop().create_future()

    async def on_stop(self) -> None:
        self.stopped.set()


class Silent(Actor):
    """Keeps requests unanswered until told to answer them all."""

    def __init__(self, held: list[Message], got: threading.Event) -> None:
        self.held = held
        self.got = got

    def handle(self, message: Message) -> None:
        if message.payload == "answer":
            for request in self.held:
                self.reply(request, "late")
            return
        self.held.append(message)
        self.got.set()


def test_one_message_at_a_time_in_mailbox_order(asys: ActorSystem, recorder: Recorder) -> None:
    a = asys.spawn(functools.partial(Log, recorder), "a")
    b = asys.spawn(functools.partial(Log, recorder), "b")
    for i in range(500):
        a.tell(i)
        b.tell(i)
    recorder.wait_count(1000)
    by_member: dict[str, list[Any]] = {}
    for member, message in recorder.handled:
        by_member.setdefault(member, []).append(message.payload)
    assert by_member == {"a": list(range(500)), "b": list(range(500))}
    loop_thread = next(t for t in threading.enumerate() if t.name == "asys-aio")
    assert not loop_thread.daemon
    assert a.ping(timeout=WAIT).native_thread_id == loop_thread.native_id
    assert b.ping(timeout=WAIT).native_thread_id == loop_thread.native_id  # one loop, shared
    (stats,) = a.stats()
    assert stats.processed[MessageType.DATA] == 500
    assert stats.state is ActorState.RUNNING
    assert stats.native_thread_id == loop_thread.native_id
    assert stats.handle_time.count == 500


def test_a_failing_coroutine_restarts_the_actor_and_loses_nothing(asys: ActorSystem) -> None:
    Flaky.starts = Flaky.stops = 0
    ref = asys.spawn(Flaky, "flaky")
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=WAIT)
    assert ref.ask("after", timeout=WAIT) == ("ok", "after")
    (stats,) = ref.stats()
    assert (stats.errors, stats.restarts, Flaky.starts) == (1, 1, 2)
    failed = [d for d in asys.channel.dead_letters() if d.reason is DeadLetterReason.FAILED]
    assert [d.message.payload for d in failed] == ["boom"]
    assert failed[0].error == "RuntimeError: boom"
    assert asys.restart("flaky") == 1  # the control lane's restart
    assert ref.ask("again", timeout=WAIT) == ("ok", "again")
    assert (Flaky.starts, Flaky.stops) == (3, 1)


def test_too_many_failures_escalate() -> None:
    escalated: list[str] = []
    system = ActorSystem(
        "esc",
        default_policy=RestartPolicy(max_restarts=1, period=60.0, backoff_initial=0.0),
        on_escalate=lambda e: escalated.append(e.actor),
    )
    try:
        ref = system.spawn(Flaky, "flaky")
        for _ in range(2):
            with pytest.raises(RuntimeError):
                ref.ask("boom", timeout=WAIT)
        assert system.escalated.wait(WAIT)
        assert escalated == ["flaky"]
        assert not ref.alive
        assert system.escalations[0].failures_in_period == 2
    finally:
        system.stop(timeout=WAIT)


def test_an_immediate_stop_cancels_the_awaiting_handler(asys: ActorSystem) -> None:
    entered, stopped = threading.Event(), threading.Event()
    ref = asys.spawn(functools.partial(Waiter, entered, stopped), "waiter")
    ref.tell("wait forever")
    ref.tell("queued")
    assert entered.wait(WAIT)
    ref.stop(graceful=False, timeout=WAIT)
    assert stopped.is_set()  # on_stop ran: a stop, not a failure
    letters = {
        d.message.payload: d.reason
        for d in asys.channel.dead_letters()
        if d.message.recipient == "waiter"
    }
    assert letters == {"wait forever": DeadLetterReason.STOPPED, "queued": DeadLetterReason.STOPPED}
    (stats,) = ref.stats() or (None,)
    assert stats is None or stats.errors == 0


def test_a_graceful_stop_waits_then_stops_the_awaiting_handler(asys: ActorSystem) -> None:
    entered, stopped = threading.Event(), threading.Event()
    ref = asys.spawn(functools.partial(Waiter, entered, stopped), "waiter")
    ref.tell("wait forever")
    assert entered.wait(WAIT)
    ref.stop(graceful=True, timeout=0.1)  # drains until the deadline, then stops it now
    assert stopped.is_set()
    assert [
        d.reason for d in asys.channel.dead_letters() if d.message.payload == "wait forever"
    ] == [DeadLetterReason.STOPPED]


def test_a_stop_withdraws_an_ask_in_flight_and_its_late_reply_is_a_stopped_letter(
    asys: ActorSystem,
) -> None:
    held: list[Message] = []
    got, entered, stopped = threading.Event(), threading.Event(), threading.Event()
    silent = asys.spawn(lambda: Silent(held, got), "silent")
    waiter = asys.spawn(functools.partial(Waiter, entered, stopped), "waiter")
    waiter.tell("ask")
    assert got.wait(WAIT)
    assert asys.channel.pending_requests() == 1
    waiter.stop(graceful=False, timeout=WAIT)
    assert asys.channel.pending_requests() == 0
    silent.tell("answer")
    silent.ping(timeout=WAIT)
    replies = [d for d in asys.channel.dead_letters() if d.message.type is MessageType.RESPONSE]
    assert [d.reason for d in replies] == [DeadLetterReason.STOPPED]


class Ticker(AsyncActor):
    def __init__(self, ticks: Recorder) -> None:
        self.ticks = ticks

    async def on_start(self) -> None:
        self.schedule(0.0, "tick", interval=0.01)

    async def handle(self, message: Message) -> None:
        self.ticks.add(self.member, message)
        self.publish(("tock", len(self.ticks.handled)), timeout=0)


def test_timers_and_pub_sub(asys: ActorSystem, recorder: Recorder) -> None:
    ticks = Recorder()
    asys.spawn(lambda: RecordingActor(recorder), "sub")
    asys.spawn(functools.partial(Ticker, ticks), "ticker")
    asys.channel.subscribe("ticker", "sub")
    ticks.wait_count(3)
    recorder.wait_count(3)
    assert all(m.payload == "tick" for _, m in ticks.handled[:3])
    assert [m.payload[0] for _, m in recorder.handled[:3]] == ["tock"] * 3
    assert all(m.type is MessageType.EVENT for _, m in recorder.handled[:3])


class Subscriber(AsyncActor):
    def __init__(self, events: Recorder) -> None:
        self.events = events

    async def handle(self, message: Message) -> None:
        self.events.add(self.member, message)


def test_an_async_actor_gets_a_thread_actor_s_events(asys: ActorSystem) -> None:
    events = Recorder()
    asys.spawn(functools.partial(Subscriber, events), "async-sub")
    asys.channel.subscribe("publisher", "async-sub")
    asys.channel.publish("publisher", "news")
    events.wait_count(1)
    assert events.handled[0][1].payload == "news"


class Front(Actor):
    """Thread actor: asks the async middle, blocking its own thread."""

    def handle(self, message: Message) -> None:
        self.reply(message, ("front", self.ask("middle", message.payload, timeout=WAIT)))


class Middle(AsyncActor):
    """Async: awaits the thread back end without blocking the loop."""

    async def handle(self, message: Message) -> None:
        answers = await asyncio.gather(
            *(self.ask_async("back", message.payload + i, timeout=WAIT) for i in range(3))
        )
        self.reply(message, ("middle", tuple(answers)))


class Back(Actor):
    def handle(self, message: Message) -> None:
        self.reply(message, message.payload * 10)


def test_a_chain_thread_async_thread(asys: ActorSystem) -> None:
    asys.spawn_pool(Back, "back", 2)
    asys.spawn(Middle, "middle")
    front = asys.spawn(Front, "front")
    assert front.ask(1, timeout=WAIT) == ("front", ("middle", (10, 20, 30)))

    async def many() -> list[Any]:
        return await asyncio.gather(*(front.ask_async(i, timeout=WAIT) for i in range(50)))

    results = asyncio.run(many())
    assert results == [("front", ("middle", (10 * i, 10 * i + 10, 10 * i + 20))) for i in range(50)]


class Blocker(AsyncActor):
    """Blocks the loop (a blocking wait inside async def) until released."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered = entered
        self.release = release

    async def handle(self, message: Message) -> None:
        time.sleep(3 * HEARTBEAT)  # the bug under test: the loop is held
        self.entered.set()
        self.release.wait(WAIT)  # still holding it


def test_a_handler_blocking_the_loop_is_flagged_by_the_monitor(asys: ActorSystem) -> None:
    monitor = asys.spawn(
        lambda: Monitor(asys, interval=60.0, stuck_after=60.0, blocked_after=HEARTBEAT),
        "monitor",
    )
    entered, release = threading.Event(), threading.Event()
    blocker = asys.spawn(functools.partial(Blocker, entered, release), "blocker")
    idle = asys.spawn(Flaky, "idle")  # another async actor: waiting, not blocking
    assert idle.ask("x", timeout=WAIT) == ("ok", "x")
    blocker.tell("hold the loop")
    assert entered.wait(WAIT)
    try:
        sample: MonitorSample = monitor.ask(GetSample(), timeout=WAIT)
        assert sample.stuck == ("blocker",)
        assert not sample.healthy
        by_name = {a.name: a for a in sample.actors}
        assert not by_name["idle"].stuck
    finally:
        release.set()
    blocker.ping(timeout=WAIT)
    after: MonitorSample = monitor.ask(GetSample(), timeout=WAIT)
    assert after.stuck == ()


class Hog(AsyncActor):
    """Holds the loop (no await) for two slices per message: a CPU-bound handler."""

    def __init__(
        self, started: threading.Event, finished: threading.Event, seen: list[int], total: int
    ) -> None:
        self.started = started
        self.finished = finished
        self.seen = seen
        self.total = total

    async def handle(self, message: Message) -> None:
        self.started.set()
        time.sleep(2 * SLICE_NS / 1e9)  # the workload: the loop is held meanwhile
        self.seen.append(message.payload)
        if len(self.seen) == self.total:
            self.finished.set()


class Note(AsyncActor):
    """Notes how many messages the hog had handled when this one got its turn."""

    def __init__(self, seen: list[int], noted: list[int], done: threading.Event) -> None:
        self.seen = seen
        self.noted = noted
        self.done = done

    async def handle(self, message: Message) -> None:
        self.noted.append(len(self.seen))
        self.done.set()


def test_a_batch_of_slow_handlers_gives_the_other_actors_their_turn_after_a_slice(
    asys: ActorSystem,
) -> None:
    started, finished, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []
    noted: list[int] = []
    total = 60  # less than a batch: without the slice the hog would handle them all first
    assert total < BATCH
    hog = asys.spawn(functools.partial(Hog, started, finished, seen, total), "hog")
    other = asys.spawn(functools.partial(Note, seen, noted, done), "other")
    for i in range(total):
        hog.tell(i)
    assert started.wait(WAIT)
    other.tell("my turn?")
    assert done.wait(WAIT)
    assert noted[0] < total // 2  # its turn came after a few slices, not after the batch
    assert finished.wait(WAIT)
    assert seen == list(range(total))  # the rest of each slice went back in order
    (stats,) = hog.stats()
    assert stats.processed[MessageType.DATA] == total
    assert stats.handle_time.count == total


class Slow(AsyncActor):
    """Holds the loop for two slices per message."""

    def __init__(self, seen: list[int], total: int, finished: threading.Event) -> None:
        self.seen = seen
        self.total = total
        self.finished = finished

    async def handle(self, message: Message) -> None:
        time.sleep(2 * SLICE_NS / 1e9)  # the workload: the loop is held meanwhile
        self.seen.append(message.payload)
        if len(self.seen) == self.total:
            self.finished.set()


def test_after_a_slow_batch_the_batches_are_small_and_nothing_more_goes_back(
    asys: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What goes back to the mailbox after a slice passes its capacity when a sender has taken
    # the room meanwhile: with full batches each time, the mailbox would grow batch by batch
    # (7, 14, 21... put back). After a slow batch each batch is one message: nothing more.
    put_back: list[int] = []
    requeue = Inbox.requeue

    def counted(inbox: Inbox, messages: list[Message]) -> None:
        put_back.append(len(messages))
        requeue(inbox, messages)

    monkeypatch.setattr(Inbox, "requeue", counted)
    seen: list[int] = []
    total, capacity = 40, 8
    finished = threading.Event()
    slow = asys.spawn(functools.partial(Slow, seen, total, finished), "slow", capacity=capacity)
    sender = threading.Thread(
        target=lambda: [slow.tell(i, timeout=WAIT) for i in range(total)], name="test-sender"
    )
    sender.start()
    assert finished.wait(WAIT)
    sender.join(WAIT)
    assert seen == list(range(total))
    assert len(put_back) <= 2, put_back  # the first batch (and one the sender raced), no more


class Relay(AsyncActor):
    """Sends what it is told to `target` with `send_async`, by name or by ref."""

    def __init__(self, target: Any, refused: list[str]) -> None:
        self.target = target
        self.refused = refused

    async def handle(self, message: Message) -> None:
        try:
            self.send_async(self.target, [message.payload])
        except BadPayload as error:
            self.refused.append(type(error).__name__)
        await self.send_async(self.target, message.payload)
        if message.correlation_id is not None:
            self.reply(message, "sent")


def test_send_async_from_an_actor_by_name_or_ref_and_to_nobody(
    asys: ActorSystem, recorder: Recorder
) -> None:
    sink = asys.spawn(lambda: RecordingActor(recorder), "sink")
    refused: list[str] = []
    by_name = asys.spawn(functools.partial(Relay, "sink", refused), "by-name")
    by_ref = asys.spawn(functools.partial(Relay, sink, refused), "by-ref")
    nowhere = asys.spawn(functools.partial(Relay, "nobody", refused), "nowhere")
    assert by_name.ask(1, timeout=WAIT) == "sent"
    assert by_ref.ask(2, timeout=WAIT) == "sent"
    assert nowhere.ask(3, timeout=WAIT) == "sent"
    recorder.wait_count(2)
    assert sorted(m.payload for _, m in recorder.handled) == [1, 2]
    assert {m.sender for _, m in recorder.handled} == {"by-name", "by-ref"}
    assert refused == ["BadPayload"] * 3  # a mutable payload never leaves the actor
    counts = asys.channel.dead_letter_counts()
    assert counts.get(DeadLetterReason.UNKNOWN_RECIPIENT, 0) == 1


def test_prometheus_exports_an_async_actor_as_a_thread_actor(asys: ActorSystem) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from actord.daemon.metrics import RuntimeCollector

    registry = CollectorRegistry()  # this test's own
    registry.register(RuntimeCollector(asys.stats, asys.channel))
    ref = asys.spawn(Flaky, "flaky")
    for i in range(5):
        ref.tell(i)
    with pytest.raises(RuntimeError):
        ref.ask("boom", timeout=WAIT)
    ref.ping(timeout=WAIT)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    labels = (("actor", "flaky"), ("pool", "flaky"))
    assert samples[("actord_actor_messages_total", (*labels, ("type", "data")))] == 5
    assert samples[("actord_actor_errors_total", labels)] == 1
    assert samples[("actord_actor_restarts_total", labels)] == 1
    assert samples[("actord_actor_up", labels)] == 1.0
    assert samples[("actord_dead_letters_total", (("reason", "failed"),))] == 1


def test_an_async_actor_made_by_a_lambda_fails_with_a_clear_error() -> None:
    system = ActorSystem("lam", default_policy=RestartPolicy(max_restarts=0))
    try:
        system.spawn(lambda: Flaky(), "flaky")  # noqa: PLW0108 - a lambda hides the class
        assert system.escalated.wait(WAIT)
        error = system.escalations[0].error
        assert isinstance(error, TypeError)
        assert "spawn an AsyncActor by its class" in str(error)
    finally:
        system.stop(timeout=WAIT)
